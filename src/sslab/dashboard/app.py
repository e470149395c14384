"""sslab dashboard: ``sslab dashboard`` or ``streamlit run dashboard/app.py``.

Reads the results store under ``$SSLAB_RESULTS`` (or the root typed in the sidebar) and nothing
else: no Ray, no torch. Each page is one file under ``views/`` (not ``pages/``: Streamlit would also serve a folder of that name
as old-style pages, and a link straight to a page would skip this script).
"""

import streamlit as st

from sslab.dashboard import selection

st.set_page_config(page_title="sslab", page_icon=":material/science:", layout="wide")

PAGES = [
    st.Page("views/studies.py", title="Studies", icon=":material/table_chart:", default=True),
    st.Page("views/ablation.py", title="Ablation curve", icon=":material/show_chart:"),
    st.Page("views/probes.py", title="Layer probes", icon=":material/layers:"),
    st.Page("views/invariance.py", title="Invariance", icon=":material/compare_arrows:"),
    st.Page("views/neighbours.py", title="Neighbours", icon=":material/grid_view:"),
    st.Page("views/embedding.py", title="Embedding map", icon=":material/bubble_chart:"),
    st.Page("views/training.py", title="Training curves", icon=":material/timeline:"),
    st.Page("views/search.py", title="Search", icon=":material/travel_explore:"),
    st.Page("views/label_free.py", title="Label-free vs kNN", icon=":material/scatter_plot:"),
    st.Page("views/trials.py", title="Trials", icon=":material/filter_list:"),
]

page = st.navigation(PAGES)
selection.sidebar()
page.run()
