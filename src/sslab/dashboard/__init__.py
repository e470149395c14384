"""Streamlit dashboard: reads the results store only (no Ray, no torch)."""
