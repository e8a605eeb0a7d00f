"""One run per results folder: a run holds an OS file lock on its folder while it writes there; a second run into
the same folder stops at once with one line naming the holder (its pid, host and start time). The lock goes with
the process (also on kill -9), so a stale lock never blocks a rerun."""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from harness.errors import ConfigError

LOCK = ".harness.lock"
OWNER = ".harness.lock.owner"  # who holds the lock, for the message a second run prints


class FolderBusy(ConfigError):
    """Another run holds the results folder."""


def _acquire(run_dir: Path) -> FileLock:
    lock = FileLock(str(run_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = (run_dir / OWNER).read_text(encoding="utf-8").strip() or "another run"
        except OSError:
            holder = "another run"
        raise FolderBusy(f"{run_dir} is in use by {holder}; wait for it to finish or choose another results_dir",
                         field="results_dir") from None
    return lock


def check_free(run_dir: Path) -> None:
    """Refuse a folder another run holds before Hydra writes its .hydra files into it (FolderBusy)."""
    if (Path(run_dir) / LOCK).is_file():
        _acquire(Path(run_dir)).release()


@contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _acquire(run_dir)
    try:
        (run_dir / OWNER).write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}", encoding="utf-8")
        yield
    finally:
        (run_dir / OWNER).unlink(missing_ok=True)
        lock.release()
