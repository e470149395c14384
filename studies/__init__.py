"""Runnable study scripts: `python studies/<name>.py`."""
