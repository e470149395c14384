"""Helpers the dashboard's tests share (a module of its own: ``conftest`` is a name every test
folder has, so importing helpers from it depends on which folder pytest collected last)."""

import base64
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest

ROOT = Path(__file__).resolve().parents[2]


def figure_of(chart) -> dict:
    """The traces of an AppTest plotly chart element, with plotly's base64 typed arrays decoded."""
    figure = pio.from_json(chart.proto.spec)
    return [{key: decode(value) for key, value in trace.to_plotly_json().items()} for trace in figure.data], figure.layout


def decode(value):
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value.tolist() if isinstance(value, np.ndarray) else value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_dashboard(root: Path, log: Path):
    """``sslab dashboard --results ROOT`` on a free localhost port until the block ends; its URL
    once its health check answers (the test fails with the server's log if it never does)."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sslab.cli", "dashboard", "--results", str(root),
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"sslab dashboard did not come up on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
