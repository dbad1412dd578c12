"""Exclusive ownership by flock: one server per state dir, and one per slice parent.

A second `berth serve` on the same state dir would delete the first one's engine sockets
and write false events into its database; one on the same slice parent would kill the
first one's engines as "stale". Both are refused at start instead.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


class StateDirBusy(RuntimeError):
    pass


class StateLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what  # e.g. "the state dir /x": named in the refusal
        self._fd: int | None = None

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> StateLock:
        return cls(state_dir / "berth.lock", f"the state dir {state_dir}")

    @classmethod
    def for_slice_parent(cls, parent: str) -> StateLock:
        return cls(Path(tempfile.gettempdir()) / f"berth-slices-{parent}.lock",
                   f"the slice parent {parent!r} (set [node] slice_parent to run another)")

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(f"another berth server (pid {holder}) is using {self.what}"
                               ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
