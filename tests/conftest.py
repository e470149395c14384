import os
import sys

# shared test helpers (tests/host_syncs.py) importable from every test folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


def pytest_collection_modifyitems(session, config, items):
    """The autoscaling test first: it must be the first Ray session of its process (an earlier
    ``ray.init`` in the same process leaves state that its fake autoscaling cluster trips on), and
    the folders' order alone would put tests/data's Ray test before it."""
    first = [item for item in items if item.path.name == "test_autoscaling.py"]
    if first:
        items[:] = first + [item for item in items if item.path.name != "test_autoscaling.py"]
