"""Atomic, durable file writes.

Every file is written into a new temporary file in its folder and renamed into place,
so a crash or Ctrl-C never leaves a half-written file that looks finished, and a failed
re-run never truncates the previous run's file. The temporary file is made by
:func:`tempfile.mkstemp` (a random name, created exclusively, never following a link
planted under a predictable name), written through its open descriptor, flushed to disk
with ``fsync`` before the rename, and the folder is synced after it, so a power cut
leaves either the old file or the new one.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import crash
from .errors import DiskFullError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def write_with(path, writer: Callable[[BinaryIO], Any]) -> Path:
    """Call ``writer(f)`` with an open binary file, then move it to ``path`` atomically; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _temp_beside(path)
    except OSError as exc:
        _raise_if_full(exc, path, 0)
        raise
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            written = f.tell()
            crash.point("atomic-written")
            os.fsync(f.fileno())  # an fsync error is never retried: the file is dropped and the write fails
        crash.point("atomic-fsynced")
        os.replace(tmp, path)
    except BaseException as exc:
        written = written or (os.path.getsize(tmp) if os.path.lexists(tmp) else 0)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(exc, Exception):  # torch.save reports a full disk as a RuntimeError over the OSError
            _raise_if_full(exc, path, written)
        raise
    crash.point("atomic-renamed")
    _fsync_dir(path.parent)
    crash.point("atomic-dir-synced")
    return path


def _temp_beside(path: Path):
    """(descriptor, name) of a new temporary file beside ``path``: ``.NAME.<random>.part`` (see PART_GLOB)."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")


def keep_as(path, other) -> Path:
    """Make ``other`` name the file now at ``path`` too, durably: a hard link (a copy where the file system has
    none) renamed into place, so ``other`` is the old file or the new one, never a part of one. The file at
    ``path`` can then be replaced while ``other`` keeps it. Returns ``other``."""
    path, other = Path(path), Path(other)
    if other.is_file() and os.path.samefile(path, other):
        return other  # already: renaming a link onto its twin would do nothing and leave the link behind
    fd, tmp = _temp_beside(other)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, other)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(other.parent)
    return other


PART_GLOB = ".*.part"  # the temporary files of write_with and keep_as: .NAME.<random>.part


def remove_leftover_parts(folder, before: float) -> int:
    """Remove the temporary files of writes that never finished (a process killed mid-write) under ``folder``,
    those last changed before the time ``before`` (a write in progress keeps its file's mtime fresh); return
    how many."""
    removed = 0
    for part in Path(folder).rglob(PART_GLOB):
        try:
            if part.is_file() and not part.is_symlink() and part.stat().st_mtime < before:
                part.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # its writer finished or removed it meanwhile
    return removed


def _raise_if_full(exc: OSError, path: Path, written: int) -> None:
    """Turn a full disk or quota (also when a writer wrapped it) into one :class:`DiskFullError` line: the file,
    the space it needs (at least what was written, or the size of the file it replaces) and the space free."""
    cause = exc
    while cause is not None and getattr(cause, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return
    need = max(written, path.stat().st_size if path.is_file() else 0)
    free = shutil.disk_usage(path.parent).free
    raise DiskFullError(f"no space left on the disk for {path} ({os.strerror(cause.errno)}): it needs more than "
                        f"{_size(need)}, {_size(free)} is free in {path.parent}; nothing half-written was kept") from None


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 else f"{n} bytes"


def write_text(path, text: str) -> Path:
    return write_with(path, lambda f: f.write(text.encode("utf-8")))


def write_bytes(path, data: bytes) -> Path:
    return write_with(path, lambda f: f.write(data))


def write_json(path, obj: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


def torch_save(obj: Any, path) -> Path:
    import torch

    return write_with(path, lambda f: torch.save(obj, f))


def save_figure(fig, path, **kwargs) -> Path:
    """``fig.savefig`` through a temporary file (the format comes from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return write_with(path, lambda f: fig.savefig(f, format=fmt, **kwargs))


def save_image(image, path, **kwargs) -> Path:
    """A PIL image, saved through a temporary file (format from ``path``'s suffix)."""
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(Path(path).suffix.lstrip(".").lower(), Path(path).suffix.lstrip(".").upper() or "PNG")
    return write_with(path, lambda f: image.save(f, format=fmt, **kwargs))


def sha256_of(path) -> str:
    """The sha256 of a file, read in 1 MB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def relative_path(path, start) -> str:
    """``path`` as a report or a record names it: relative to the folder ``start``, with ``/`` separators."""
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
