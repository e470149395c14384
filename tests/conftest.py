import os
import sys

# shared test helpers (tests/host_syncs.py) importable from every test folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
