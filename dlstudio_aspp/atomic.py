"""Atomic file writes: every file is written under a temporary name in its folder and
renamed into place, so a crash or Ctrl-C never leaves a half-written file that looks
finished, and a failed re-run never truncates the previous run's file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def write_with(path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and rename the result to ``path``; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path, text: str) -> Path:
    return write_with(path, lambda p: p.write_text(text))


def write_bytes(path, data: bytes) -> Path:
    return write_with(path, lambda p: p.write_bytes(data))


def write_json(path, obj: Any, indent: int = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


def torch_save(obj: Any, path) -> Path:
    import torch

    return write_with(path, lambda p: torch.save(obj, p))


def save_figure(fig, path, **kwargs) -> Path:
    """``fig.savefig`` through a temporary file (the format comes from ``path``'s suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return write_with(path, lambda p: fig.savefig(p, format=fmt, **kwargs))


def save_image(image, path, **kwargs) -> Path:
    """A PIL image, saved through a temporary file (format from ``path``'s suffix)."""
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(Path(path).suffix.lstrip(".").lower(), Path(path).suffix.lstrip(".").upper() or "PNG")
    return write_with(path, lambda p: image.save(p, format=fmt, **kwargs))
