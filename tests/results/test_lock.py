"""One writer per results store: a second study process refuses (or waits) naming the holder; a lock
left by a dead process is taken over, said in one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow.fs as pafs
import pytest

from sslab.results.store import StoreError
from sslab.results.lock import StoreLock, StoreLockedError, lock_holder

HOLDER = textwrap.dedent("""
    import sys, time
    import pyarrow.fs as pafs
    from sslab.results.lock import StoreLock
    with StoreLock(pafs.LocalFileSystem(), sys.argv[1], shown="the store", note=None):
        print("held", flush=True)
        sys.stdin.readline()  # hold until told to go (or killed)
""")


def _local(tmp_path):
    return pafs.LocalFileSystem(), str(tmp_path / "study" / ".lock")


def _start_holder(lock_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, lock_path], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        proc.wait()
        pytest.fail(f"the holder process did not take the lock: {line!r}")
    return proc


def _write(fs, path, data):
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(data if isinstance(data, bytes) else json.dumps(data).encode())


def _foreign(heartbeat_age_s):
    return {"host": "another-host.example", "pid": 4242, "since": "2025-01-01T12:00:03+00:00",
            "token": "f" * 32, "heartbeat": time.time() - heartbeat_age_s, "command": ["studies/x.py"]}


def test_a_second_lock_on_the_same_path_refuses_at_once_naming_the_holder(tmp_path):
    fs, path = _local(tmp_path)
    with StoreLock(fs, path, shown="results/study", note=None):
        holder = lock_holder(fs, path)
        assert holder["host"] == socket.gethostname() and holder["pid"] == os.getpid()
        assert holder["since"].endswith("+00:00") and len(holder["token"]) == 32
        assert holder["command"] == sys.argv
        start = time.monotonic()
        with pytest.raises(StoreLockedError) as refused:
            with StoreLock(fs, path, shown="results/study", note=None):
                pytest.fail("two holders")
        assert time.monotonic() - start < 10
    message = str(refused.value)
    assert isinstance(refused.value, StoreError)  # the CLI prints it as one line, exit 2
    assert "\n" not in message
    assert message.startswith("results/study is being written by another study process")
    assert f"host {socket.gethostname()}" in message and f"pid {os.getpid()}" in message
    assert f"since {holder['since']}" in message and "--results <another folder>" in message
    assert not os.path.exists(path)  # released on exit


def test_another_process_holds_the_lock_until_it_exits(tmp_path):
    fs, path = _local(tmp_path)
    proc = _start_holder(path)
    try:
        with pytest.raises(StoreLockedError, match=rf"the store is being written .*pid {proc.pid}, since "):
            StoreLock(fs, path, shown="the store", note=None).acquire()
    finally:
        proc.communicate("go\n", timeout=30)
    assert proc.returncode == 0
    assert not os.path.exists(path)
    notes = []
    with StoreLock(fs, path, note=notes.append):
        assert lock_holder(fs, path)["pid"] == os.getpid()
    assert notes == []


def test_a_lock_left_by_a_killed_process_is_taken_over_in_one_line(tmp_path):
    fs, path = _local(tmp_path)
    proc = _start_holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    left = lock_holder(fs, path)
    assert left["pid"] == proc.pid  # the file stays behind
    notes = []
    with StoreLock(fs, path, shown="results/study", note=notes.append):
        assert lock_holder(fs, path)["pid"] == os.getpid()
    assert notes == [f"taking over the lock of results/study left by pid {proc.pid} on host "
                     f"{socket.gethostname()} (since {left['since']}), which is no longer running"]


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    """Same host, the pid alive, but its process started after the lock was taken: stale."""
    fs, path = _local(tmp_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write(fs, path, {"host": socket.gethostname(), "pid": sleeper.pid, "since": "2020-01-01T00:00:00+00:00",
                          "token": "e" * 32, "heartbeat": time.time(), "command": ["old"]})
        if not os.path.exists(f"/proc/{sleeper.pid}/stat"):
            with pytest.raises(StoreLockedError):  # no /proc: the start time is not checked
                StoreLock(fs, path, note=None).acquire()
            return
        notes = []
        with StoreLock(fs, path, note=notes.append):
            pass
        assert len(notes) == 1 and f"left by pid {sleeper.pid}" in notes[0] and "started after" in notes[0]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_is_stale_only_once_its_heartbeat_is_old(tmp_path):
    fs, path = _local(tmp_path)
    _write(fs, path, _foreign(heartbeat_age_s=5))
    with pytest.raises(StoreLockedError) as refused:
        StoreLock(fs, path, shown="s3://bucket/study", note=None).acquire()
    message = str(refused.value)
    assert "host another-host.example, pid 4242, since 2025-01-01T12:00:03+00:00" in message
    assert "last heartbeat 5 s ago" in message and "command studies/x.py" in message
    assert refused.value.holder["pid"] == 4242

    _write(fs, path, _foreign(heartbeat_age_s=1000))
    notes = []
    with StoreLock(fs, path, shown="s3://bucket/study", note=notes.append):
        assert lock_holder(fs, path)["host"] == socket.gethostname()
    assert notes == ["taking over the lock of s3://bucket/study left by pid 4242 on host another-host.example "
                     "(since 2025-01-01T12:00:03+00:00), which is no longer running; no heartbeat for 1000 s"]


def test_the_holder_refreshes_its_heartbeat(tmp_path):
    fs, path = _local(tmp_path)
    with StoreLock(fs, path, note=None, heartbeat_s=0.1, stale_after_s=5):
        first = lock_holder(fs, path)["heartbeat"]
        time.sleep(0.5)
        later = lock_holder(fs, path)
        assert later["heartbeat"] > first
        assert later["since"] == lock_holder(fs, path)["since"]


def test_waiting_acquires_once_the_holder_releases(tmp_path):
    fs, path = _local(tmp_path)
    first = StoreLock(fs, path, note=None)
    first.acquire()
    threading.Timer(1.0, first.release).start()
    notes = []
    start = time.monotonic()
    with StoreLock(fs, path, shown="results/study", wait_s=4, poll_s=0.05, note=notes.append):
        waited = time.monotonic() - start
        assert lock_holder(fs, path)["token"] != first._record["token"]
    assert 0.8 < waited < 4
    assert len(notes) == 1 and notes[0].startswith("waiting up to 4 s for results/study, held by host ")


def test_waiting_gives_up_after_wait_s(tmp_path):
    fs, path = _local(tmp_path)
    with StoreLock(fs, path, note=None):
        start = time.monotonic()
        with pytest.raises(StoreLockedError, match=r"\(waited 0.5 s\); wait for it to finish"):
            StoreLock(fs, path, wait_s=0.5, poll_s=0.05, note=None).acquire()
        assert 0.4 < time.monotonic() - start < 3


def test_a_corrupt_lock_file_is_taken_over(tmp_path):
    fs, path = _local(tmp_path)
    _write(fs, path, b"{not json")
    notes = []
    with StoreLock(fs, path, shown="results/study", note=notes.append, settle_s=0.2):
        assert lock_holder(fs, path)["pid"] == os.getpid()
    assert len(notes) == 1
    assert notes[0].startswith("taking over the lock of results/study: its lock file results/study/.lock is "
                               "unreadable (not JSON)")
    assert not os.path.exists(path)


def test_the_lock_is_released_when_the_body_raises(tmp_path):
    fs, path = _local(tmp_path)
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            with StoreLock(fs, path, note=None):
                assert os.path.exists(path)
                raise error()
        assert not os.path.exists(path)


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    fs, path = _local(tmp_path)
    lock = StoreLock(fs, path, note=None)
    lock.acquire()
    _write(fs, path, _foreign(heartbeat_age_s=0))  # taken over meanwhile
    lock.release()
    assert lock_holder(fs, path)["host"] == "another-host.example"


def _object_stores(tmp_path):
    yield "subtree", pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    mock = getattr(pafs, "_MockFileSystem", None)
    if mock is not None:
        yield "mock", mock()


@pytest.mark.parametrize("kind", ["subtree", "mock"])
def test_object_stores_lock_by_write_and_read_back(tmp_path, kind):
    stores = dict(_object_stores(tmp_path))
    if kind not in stores:
        pytest.skip("this pyarrow has no _MockFileSystem")
    fs, path = stores[kind], "bucket/study/.lock"
    notes = []
    with StoreLock(fs, path, shown="s3://bucket/study", note=notes.append, settle_s=0.1, heartbeat_s=0.1,
                   stale_after_s=5) as lock:
        assert not lock.local
        assert lock_holder(fs, path)["pid"] == os.getpid()
        start = time.monotonic()
        with pytest.raises(StoreLockedError, match=rf"^s3://bucket/study is being written .*pid {os.getpid()}"):
            StoreLock(fs, path, shown="s3://bucket/study", note=None, settle_s=0.1).acquire()
        assert time.monotonic() - start < 10
        _write(fs, path, _foreign(heartbeat_age_s=0))  # a racer's write landed last: the heartbeat notices
        time.sleep(0.5)
        assert lock.lost
    assert notes and notes[0].startswith("the lock of s3://bucket/study was taken by another process")
    assert lock_holder(fs, path)["host"] == "another-host.example"  # not ours: not deleted

    _write(fs, path, _foreign(heartbeat_age_s=1000))
    notes.clear()
    with StoreLock(fs, path, shown="s3://bucket/study", note=notes.append, settle_s=0.1):
        assert lock_holder(fs, path)["pid"] == os.getpid()
    assert len(notes) == 1 and "no longer running; no heartbeat for 1000 s" in notes[0]
    assert fs.get_file_info(path).type == pafs.FileType.NotFound

    _write(fs, path, b"")
    notes.clear()
    with StoreLock(fs, path, note=notes.append, settle_s=0.1):
        pass
    assert len(notes) == 1 and "is unreadable (empty)" in notes[0]


def test_the_module_imports_neither_ray_nor_torch():
    code = ("import sys; import sslab.results.lock; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
