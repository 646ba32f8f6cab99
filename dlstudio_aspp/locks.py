"""One writer per folder: an exclusive lock file for ``run``, ``experiments`` and ``build-coco``.

``FolderLock(folder, command)`` creates ``folder/.dlstudio_aspp.lock`` with
``O_CREAT | O_EXCL`` (so two processes cannot both create it), holding the holder's pid,
host, command and start time. A second process gets one line naming the holder. A lock
left by a process that is gone (same host, pid no longer running) is taken over with a
message; a lock from another host is never taken over (its process cannot be checked):
the message says how to remove it by hand.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from .errors import UserError

LOCK_NAME = ".dlstudio_aspp.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class FolderLock:
    """Context manager: hold ``folder``'s lock while the block runs; release it after, whatever happens."""

    def __init__(self, folder, command: str) -> None:
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME
        self.held = False
        self.created = False  # the folder did not exist: removed again on release if nothing was written

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
        return True

    def holder(self) -> Optional[dict]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treat as held by an unknown process

    def acquire(self) -> "FolderLock":
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            holder = self.holder()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                    and holder["pid"] != os.getpid() and not _alive(holder["pid"]):
                print(f"{self.folder}: taking over the lock of `{holder.get('command', '?')}` (pid {holder['pid']}), "
                      "which is no longer running")
                self.path.unlink(missing_ok=True)
                continue
            who = (f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
                   f"since {holder.get('started', '?')})") if holder else "an unknown process"
            raise UserError(f"{self.folder} is in use by {who}; wait for it to finish, or use another folder. If that "
                            f"process is gone, delete {self.path}")
        raise UserError(f"could not lock {self.folder}: its lock file keeps changing; try again")

    def release(self) -> None:
        if self.held:
            holder = self.holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
        if self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a command that failed before writing leaves no empty folder behind

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
