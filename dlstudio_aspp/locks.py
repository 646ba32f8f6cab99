"""One writer per folder: an exclusive lock for ``run``, ``experiments``, ``build-coco`` and ``explain``.

``FolderLock(folder, command)`` opens ``folder/.dlstudio_aspp.lock`` and takes an exclusive
``fcntl.flock`` on it: the kernel holds that lock for the process and drops it when the process
ends, however it ends (SIGKILL, the out-of-memory killer, a closed laptop lid). The flock is the
rule; the JSON inside (pid, host, command, start time) only names the holder in the message a
second process gets. A file whose flock is free was left by a process that is gone: it is taken
over with one line, also when it is empty or garbled (a process killed between creating the file
and writing it). A file naming another host is never taken over, since a lock on a shared disk
may not reach across machines: the message says how to remove it by hand. Once the lock is held,
the temporary files of writes that a killed process never finished (``.NAME.*.part``) are removed
from the folder, with one line that counts them.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from . import crash
from .atomic import remove_leftover_parts
from .errors import UserError

LOCK_NAME = ".dlstudio_aspp.lock"


def clean_leftovers(folder, before: float) -> int:
    """Remove the ``.part`` files that writes cut off before ``before`` left under ``folder`` (the folder's writer
    holds it now), with one line that counts them; return how many."""
    removed = remove_leftover_parts(folder, before)
    if removed:
        print(f"{folder}: removed {removed} unfinished temporary file{'s' * (removed != 1)} (.part) left by a write "
              "that was cut off")
    return removed


class FolderLock:
    """Context manager: hold ``folder``'s lock while the block runs; release it after, whatever happens."""

    def __init__(self, folder, command: str) -> None:
        self.folder, self.command = Path(folder), command
        self.path = self.folder / LOCK_NAME
        self.fd: Optional[int] = None
        self.fresh = False  # the lock file was created by this acquire (no earlier holder to name)
        self.created = False  # the folder did not exist: removed again on release if nothing was written

    @property
    def held(self) -> bool:
        return self.fd is not None

    def holder(self) -> Optional[dict]:
        """What the lock file says about its holder: None without a file, {} when it is empty or garbled."""
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _open_locked(self) -> Optional[int]:
        """A descriptor of the lock file with our flock on it, or None when a live process holds it."""
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd, self.fresh = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, self.fresh = os.open(self.path, flags), False
            except FileNotFoundError:
                return -1  # released meanwhile: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return -1
        return fd

    def _refuse(self, holder: Optional[dict]) -> UserError:
        who = (f"`{holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
               f"since {holder.get('started', '?')})") if holder else "an unknown process"
        return UserError(f"{self.folder} is in use by {who}; wait for it to finish, or use another folder. If that "
                         f"process is gone, delete {self.path}")

    def _take(self, fd: int) -> None:
        """With the flock held: say whose lock is taken over, if any, then write ours."""
        holder = None if self.fresh else self.holder()
        if holder and holder.get("host") not in (None, socket.gethostname()):
            os.close(fd)
            raise self._refuse(holder)
        if holder:
            print(f"{self.folder}: taking over the lock of `{holder.get('command', '?')}` (pid "
                  f"{holder.get('pid', '?')}), which is no longer running")
        elif holder == {}:
            print(f"{self.folder}: taking over an empty or unreadable lock file left by a process that is gone")
        os.ftruncate(fd, 0)
        crash.point("lock-created")
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self.fd = fd
        clean_leftovers(self.folder, before=self.started)

    def acquire(self) -> "FolderLock":
        self.started = time.time()
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = self._open_locked()
            if fd is None:
                raise self._refuse(self.holder())
            if fd >= 0:
                self._take(fd)
                return self
        raise UserError(f"could not lock {self.folder}: its lock file keeps changing; try again")

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # still under our flock: nobody else holds this file
            os.close(self.fd)
            self.fd = None
        if self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a command that failed before writing leaves no empty folder behind

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
