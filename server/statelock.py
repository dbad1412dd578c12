"""One server per state dir: an exclusive lock on `<state_dir>/berth.lock`.

A second `berth serve` on the same state dir would delete the first one's engine sockets
and write false events into its database; it is refused at start instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StateDirBusy(RuntimeError):
    pass


class StateLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "berth.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(f"another berth server (pid {holder}) is using the state dir "
                               f"{self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
