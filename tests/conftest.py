import os
import sys

import pytest

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


@pytest.fixture
def s3_bucket(monkeypatch):
    """A local S3 endpoint (moto) with one bucket; AWS_* variables point pyarrow (and Ray) at it."""
    from small import importorskip_unless_required

    moto_server = importorskip_unless_required("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import pyarrow.fs as pafs

    pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", allow_bucket_creation=True).create_dir("sslab-test")
    yield "s3://sslab-test"
    server.stop()
