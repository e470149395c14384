"""One writer per results store: a lock file ``<study folder>/.lock`` held while a study writes.

A second study process on the same store, on this machine or another, waits (``wait_s``) or refuses
at once with one line naming the holder (host, pid, since when, its command). A lock left behind by
a process that no longer runs is recognised as stale and taken over, said in one line.

The lock file is JSON::

    {"host": "node-3", "pid": 4242, "since": "<ISO 8601 time, UTC>", "token": "9f1c...",
     "heartbeat": <epoch seconds>, "boot_id": "...", "command": ["studies/pirl_lambda.py", "--profile", "small"]}

Who holds a lock, and is it stale?

* **Same host** (``socket.gethostname()`` equal): the holder is gone when its pid no longer exists
  (``os.kill(pid, 0)`` raises ``ProcessLookupError``; ``PermissionError`` means it exists), when the
  pid exists but the process behind it started after ``since`` (the pid was reused; read from
  ``/proc/<pid>/stat`` where there is one, not checked elsewhere), or when the machine has restarted
  since (``boot_id`` differs, Linux only). Containers that share a host name but not a pid namespace
  would defeat this; give them distinct host names (Kubernetes and Docker do by default).
* **Another host**: the holder refreshes ``heartbeat`` every ``heartbeat_s`` (30 s) from a daemon
  thread; the lock is stale once its heartbeat is older than ``stale_after_s`` (120 s) by this
  machine's clock, so the hosts' clocks must agree to well within that (NTP does).
* **An unreadable lock file** (not JSON, fields missing) that stays byte-for-byte the same for
  ``settle_s`` is stale too. The wait covers the instant between a local holder creating the file
  and writing its contents.

How a lock is taken, and how far that can be trusted:

* **Local filesystem** (``fs`` is a ``pyarrow.fs.LocalFileSystem``): the file is created with
  ``os.open(O_CREAT | O_EXCL)``, which is atomic, so of two processes racing for a free lock exactly
  one wins. A stale lock is first renamed aside and checked to be the very bytes judged stale (if a
  racer had meanwhile replaced it with a live lock, that lock is put back with ``os.link``, which
  fails rather than overwrite), then created as above. Network filesystems honour ``O_EXCL`` (NFSv3
  and later); that is the filesystem's promise, not this module's.
* **Object stores** (``s3://``, ``gs://``, anything else through ``pyarrow.fs``): pyarrow offers no
  create-if-absent, so this is best effort: the lock is written (one PUT), the writer waits
  ``settle_s`` (0.5 s), reads it back, and holds the lock only if the token read is its own. Two
  processes whose writes land within ``settle_s`` of each other sort this out (the last write wins
  and the other sees a foreign token), but a writer whose PUT takes longer than ``settle_s`` after a
  rival's read-back can leave both believing they hold the lock. The holder's heartbeat re-reads the
  file and, finding another token, stops refreshing and says so in one line through ``note``;
  releasing likewise reads before it deletes (not atomic either). This needs a store with
  read-after-write consistency (S3 since 2020, GCS, Azure).

Releasing deletes the file only while it still holds this lock's token, on a normal exit, an
exception or ``KeyboardInterrupt``. A process killed outright (``SIGKILL``, a lost node) leaves the
file, and the next study takes it over as above.

This module imports neither Ray nor torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import posixpath
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable

import pyarrow.fs as pafs

from sslab.results.store import StoreError

LOCK_NAME = ".lock"

#: tolerance when comparing a process's start time with the ``since`` of its lock (clock ticks, rounding)
_START_TOLERANCE_S = 2.0
_COMMAND_SHOWN = 160


class StoreLockedError(StoreError):
    """Another live study process holds the store's lock; the message is one line naming it."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        #: the lock file's contents, as read
        self.holder = dict(holder or {})


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _parse_iso(text: Any) -> float | None:
    try:
        stamp = _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp.timestamp()


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _process_start_epoch(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from ``/proc``; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        # field 22 (starttime, clock ticks after boot); fields after the ")" of comm start at field 3
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _one_line(text: Any, limit: int = _COMMAND_SHOWN) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _command_text(command: Any) -> str:
    if isinstance(command, (list, tuple)):
        command = " ".join(str(part) for part in command)
    return _one_line(command or "?")


def _decode(data: bytes) -> dict[str, Any]:
    """The lock's fields; ValueError naming what is wrong when it is not a lock file."""
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError("not JSON" if data.strip() else "empty") from err
    if not isinstance(holder, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in ("host", "pid", "token") if key not in holder]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    try:
        holder["pid"] = int(holder["pid"])
        holder["heartbeat"] = float(holder.get("heartbeat", 0.0))
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad pid or heartbeat ({err})") from err
    return holder


def lock_holder(fs: pafs.FileSystem, lock_path: str) -> dict[str, Any] | None:
    """The contents of the lock file at ``lock_path``, or None where there is none or it does not read
    (for ``sslab status``: "being written by ...")."""
    try:
        with fs.open_input_stream(lock_path) as src:
            return _decode(src.read())
    except (FileNotFoundError, ValueError):
        return None


def holder_is_live(holder: dict[str, Any], stale_after_s: float = 120.0) -> bool:
    """Whether the process a lock file names (``lock_holder``) still runs: the judgement a study makes
    before taking the lock over (for ``sslab status``: running, or interrupted)."""
    return StoreLock(pafs.LocalFileSystem(), "", note=None, stale_after_s=stale_after_s)._stale_reason(holder) is None


class StoreLock:
    """Hold ``lock_path`` on ``fs`` while a study writes its store; see the module's docstring.

    ``shown``: the store as the user names it (a path or a URI), for messages; ``wait_s``: how long
    to wait for a live holder before refusing (0: refuse at once); ``note``: called with one line
    when a stale lock is taken over, when waiting starts, and when a held lock turns out lost;
    ``stale_after_s``: a heartbeat older than this marks another host's lock stale; ``heartbeat_s``:
    how often the holder refreshes its heartbeat; ``poll_s``: how often a waiting process looks again;
    ``settle_s``: how long an object-store write is left before it is read back, and how long an
    unreadable lock file must stay unchanged to count as stale.
    """

    def __init__(
        self,
        fs: pafs.FileSystem,
        lock_path: str,
        *,
        shown: str | None = None,
        wait_s: float = 0.0,
        note: Callable[[str], Any] | None = print,
        stale_after_s: float = 120.0,
        heartbeat_s: float = 30.0,
        poll_s: float = 0.2,
        settle_s: float = 0.5,
    ):
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s = {stale_after_s} must exceed heartbeat_s = {heartbeat_s}")
        self.fs = fs
        self.path = lock_path
        self.shown = shown or lock_path
        self.lock_shown = f"{shown.rstrip('/')}/{posixpath.basename(lock_path)}" if shown else lock_path
        self.wait_s = max(0.0, float(wait_s))
        self.note = note or (lambda line: None)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.settle_s = settle_s
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.token: str | None = None
        #: set when the heartbeat finds the lock file holding someone else's token
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._record: dict[str, Any] = {}

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self.token is not None

    # ------------------------------------------------------------------- acquire
    def acquire(self) -> None:
        if self.held:
            raise RuntimeError(f"the lock of {self.shown} is already held by this StoreLock (not re-entrant)")
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.create_dir(parent, recursive=True)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        said_waiting = False
        while True:
            data = self._read()
            if data is None:
                if self._create(token):
                    break
                continue  # someone else got there first: look at what they wrote
            stale, holder, why = self._judge(data)
            if stale:
                self.note(why)
                if self._take_over(data, token):
                    break
                continue
            if time.monotonic() >= deadline:
                raise StoreLockedError(self._refusal(holder), holder)
            if not said_waiting:
                said_waiting = True
                self.note(f"waiting up to {self.wait_s:g} s for {self.shown}, {self._held_by(holder)}")
            time.sleep(max(0.0, min(self.poll_s, deadline - time.monotonic())))
        self.token = token
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"store-lock-heartbeat:{self.shown}", daemon=True)
        self._thread.start()

    def _record_for(self, token: str) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": _now_iso(),
            "token": token,
            "heartbeat": time.time(),
            "boot_id": _boot_id(),
            "command": list(sys.argv),
        }

    def _encode(self) -> bytes:
        return (json.dumps(self._record, indent=1) + "\n").encode()

    def _read(self) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.path) as src:
                return src.read()
        except FileNotFoundError:
            return None

    def _create(self, token: str) -> bool:
        """Write a new lock where there was none; True when it is ours."""
        self._record = self._record_for(token)
        if self.local:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, self._encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        self._put(self._encode())
        return self._confirm(token)

    def _put(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as out:
            out.write(data)

    def _confirm(self, token: str) -> bool:
        """Object stores: after ``settle_s``, is the lock file still the one we wrote?"""
        time.sleep(self.settle_s)
        data = self._read()
        try:
            return data is not None and _decode(data)["token"] == token
        except ValueError:
            return False

    def _take_over(self, stale: bytes, token: str) -> bool:
        """Replace the stale lock ``stale`` (its bytes as judged) with ours; True when it is ours."""
        if not self.local:
            self._record = self._record_for(token)
            self._put(self._encode())
            return self._confirm(token)
        aside = f"{self.path}.stale.{token}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return self._create(token)  # a racer removed it first
        try:
            with open(aside, "rb") as f:
                moved = f.read()
            if moved != stale:  # a racer replaced the stale lock with a live one in between: put it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
                return False
        finally:
            try:
                os.unlink(aside)
            except FileNotFoundError:
                pass
        return self._create(token)

    # ------------------------------------------------------------------- judging
    def _judge(self, data: bytes) -> tuple[bool, dict[str, Any], str]:
        """(stale, holder, the takeover line when stale)."""
        try:
            holder = _decode(data)
        except ValueError as err:
            time.sleep(self.settle_s)  # a local holder may be between creating and writing it
            if self._read() != data:
                return False, {}, ""
            return True, {}, (
                f"taking over the lock of {self.shown}: its lock file {self.lock_shown} is unreadable "
                f"({err}) and was not rewritten within {self.settle_s:g} s, so it is treated as stale"
            )
        reason = self._stale_reason(holder)
        if reason is None:
            return False, holder, ""
        line = (f"taking over the lock of {self.shown} left by pid {holder['pid']} on host {holder['host']} "
                f"(since {holder.get('since', '?')}), which is no longer running")
        return True, holder, line + (f"; {reason}" if reason else "")

    def _stale_reason(self, holder: dict[str, Any]) -> str | None:
        """None while the holder is live; else why not ("" for a pid that is gone)."""
        if holder["host"] != socket.gethostname():
            age = time.time() - holder["heartbeat"]
            return f"no heartbeat for {age:.0f} s" if age > self.stale_after_s else None
        boot = _boot_id()
        if boot and holder.get("boot_id") and holder["boot_id"] != boot:
            return f"host {holder['host']} has restarted since"
        pid = holder["pid"]
        if not _pid_exists(pid):
            return ""
        since = _parse_iso(holder.get("since"))
        started = _process_start_epoch(pid)
        if since is not None and started is not None and started > since + _START_TOLERANCE_S:
            return f"pid {pid} now belongs to a process started after the lock was taken"
        return None

    def _held_by(self, holder: dict[str, Any]) -> str:
        beat = ""
        if holder.get("host") != socket.gethostname():
            beat = f", last heartbeat {max(0.0, time.time() - holder.get('heartbeat', 0.0)):.0f} s ago"
        return (f"held by host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since "
                f"{holder.get('since', '?')}{beat}, command {_command_text(holder.get('command'))}")

    def _refusal(self, holder: dict[str, Any]) -> str:
        beat = ""
        if holder.get("host") != socket.gethostname():
            beat = f", last heartbeat {max(0.0, time.time() - holder.get('heartbeat', 0.0)):.0f} s ago"
        waited = f" (waited {self.wait_s:g} s)" if self.wait_s else ""
        return (f"{self.shown} is being written by another study process (host {holder.get('host', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('since', '?')}{beat}, command "
                f"{_command_text(holder.get('command'))}){waited}; wait for it to finish, stop it, or pass "
                f"--results <another folder>")

    # ------------------------------------------------------------ heartbeat, release
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.refresh()
            except Exception:  # a transient store error: try again at the next beat
                pass
            if self.lost:
                return

    def refresh(self) -> None:
        """Renew the heartbeat, if the lock file still holds our token (else mark the lock lost)."""
        if not self.held or self.lost:
            return
        data = self._read()
        try:
            mine = data is not None and _decode(data)["token"] == self.token
        except ValueError:
            mine = False
        if not mine:
            self.lost = True
            self.note(f"the lock of {self.shown} was taken by another process "
                      f"({self._held_by(lock_holder(self.fs, self.path) or {})}); "
                      "two studies may now be writing the same store")
            return
        self._record["heartbeat"] = time.time()
        if not self.local:
            self._put(self._encode())
            return
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "wb") as out:
            out.write(self._encode())
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Stop the heartbeat; delete the lock file while it still holds our token."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        token, self.token = self.token, None
        try:
            data = self._read()
            if data is not None and _decode(data)["token"] == token:
                self.fs.delete_file(self.path)
        except (FileNotFoundError, ValueError):
            pass
