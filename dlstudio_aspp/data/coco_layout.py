"""Where a built COCO set keeps what: the split names, the index file, the most classes a mask holds,
and the rule that every file it names lies inside it. Read by the set's reader and its builder."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


SPLITS = {"train": "train2017", "test": "val2017"}


INDEX = "index.json"


#: The most classes a mask PNG stores (one bit per class, 16-bit pixels).
MAX_CLASSES = 16


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative``, refusing a path that leaves ``root`` (``..``, an absolute path, a link outside)."""
    root = Path(root)
    rel = Path(str(relative))
    if rel.is_absolute() or not str(relative):
        raise UserError(f"{what} {relative!r} is not a path inside {root}; the file names there must be relative")
    path = root / rel
    if not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{what} {relative!r} leads outside {root}; refusing to read it")
    return path
