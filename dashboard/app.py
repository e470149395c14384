"""sslab dashboard: ``sslab dashboard`` or ``streamlit run dashboard/app.py``.

Reads the results store under ``$SSLAB_RESULTS`` (or the root typed in the sidebar) and nothing
else: no Ray, no torch. Each page is one file under ``pages/``.
"""

import streamlit as st

from sslab.dashboard import selection

st.set_page_config(page_title="sslab", page_icon=":material/science:", layout="wide")

PAGES = [
    st.Page("pages/studies.py", title="Studies", icon=":material/table_chart:", default=True),
    st.Page("pages/ablation.py", title="Ablation curve", icon=":material/show_chart:"),
    st.Page("pages/probes.py", title="Layer probes", icon=":material/layers:"),
    st.Page("pages/invariance.py", title="Invariance", icon=":material/compare_arrows:"),
    st.Page("pages/training.py", title="Training curves", icon=":material/timeline:"),
    st.Page("pages/search.py", title="Search", icon=":material/travel_explore:"),
    st.Page("pages/trials.py", title="Trials", icon=":material/filter_list:"),
]

page = st.navigation(PAGES)
selection.sidebar()
page.run()
