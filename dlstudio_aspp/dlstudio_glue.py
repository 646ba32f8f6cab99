"""Everything that depends on which DLStudio is installed, in one place.

- :func:`load_dlstudio` imports DLStudio headlessly (matplotlib's Agg backend when
  there is no display) and refuses versions this package does not know.
- :func:`stock_munet_class` finds DLStudio's mUNet class, named ``mUNet`` in 2.5.x
  and ``mUnet`` in 2.3.x.
- :func:`save_instead_of_show` makes ``DLStudio.display_tensor_as_image`` write PNG
  files instead of blocking on ``plt.show()``.
- :func:`default_num_workers` picks a DataLoader worker count that the machine has.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

from .errors import UserError

#: DLStudio release lines whose SemanticSegmentation this package was built against.
SUPPORTED_DLSTUDIO = ("2.3", "2.4", "2.5")
# The mUNet code of 2.3.6, 2.4.9 and 2.5.8 is line for line the same apart from the name.
KNOWN_GOOD = "2.3.x (class mUnet), 2.4.x and 2.5.x (class mUNet); tested with 2.5.8"


def headless() -> bool:
    """True when no display is there to show a window on."""
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


def _use_agg_if_headless() -> None:
    if headless() and "MPLBACKEND" not in os.environ:
        os.environ["MPLBACKEND"] = "Agg"
    if headless():
        import matplotlib

        matplotlib.use("Agg", force=True)


def load_dlstudio():
    """Return the ``DLStudio`` class, imported headlessly, after a version check.

    Raises:
        ImportError: DLStudio or one of the packages it imports is missing.
        ValueError: the installed DLStudio is not a supported version.
    """
    _use_agg_if_headless()
    try:
        import DLStudio as pkg
        from DLStudio import DLStudio
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"DLStudio could not be imported: {exc}. Install it with "
            "`pip install dlstudio pymsgbox torchmetrics` (or `pip install -e .` in this repo)."
        ) from exc
    version = getattr(pkg, "__version__", "unknown")
    check_version(version)
    if not hasattr(DLStudio, "SemanticSegmentation"):
        raise UserError(
            f"DLStudio {version} has no SemanticSegmentation class; versions known to work: {KNOWN_GOOD}."
        )
    return DLStudio


def check_version(version: str) -> None:
    """Raise ``ValueError`` unless ``version`` is in a supported release line."""
    line = ".".join(str(version).split(".")[:2])
    if line not in SUPPORTED_DLSTUDIO:
        raise UserError(
            f"DLStudio {version} is not supported by dlstudio-aspp; versions known to work: "
            f"{KNOWN_GOOD}. Install one with `pip install 'dlstudio>=2.3,<2.6'`."
        )


def stock_munet_class(DLStudio=None):
    """DLStudio's own mUNet class, whatever the installed version calls it."""
    DLStudio = DLStudio or load_dlstudio()
    seg = DLStudio.SemanticSegmentation
    for name in ("mUNet", "mUnet"):
        cls = getattr(seg, name, None)
        if cls is not None:
            return cls
    raise UserError(
        "DLStudio.SemanticSegmentation has neither mUNet (2.5.x) nor mUnet (2.3.x); "
        f"versions known to work: {KNOWN_GOOD}."
    )


def default_num_workers(requested: Optional[int] = None) -> int:
    """DataLoader workers: ``requested`` capped so that training keeps two cores.

    The items are slices of arrays already in memory (PurdueShapes) or one small PNG
    (COCO), so a worker saves little, while on a small machine it takes a core from the
    training threads: measured on 2 cores (benchmarks/bench_threads.py), one worker made
    training 5% slower than none. Stock DLStudio asks for 4 workers, which also warns there.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    upper = max(0, cpus - 2)
    if requested is None:
        return min(4, upper)
    if requested < 0:
        raise UserError(f"num_workers must be >= 0, got {requested}")
    return min(requested, upper)


def save_instead_of_show(dl_studio, out_dir: str | os.PathLike) -> Path:
    """Make ``dl_studio.display_tensor_as_image`` save numbered PNGs in ``out_dir``.

    Stock DLStudio ends ``display_tensor_as_image`` with ``plt.show()``, which blocks
    on a desktop and does nothing useful on a headless machine. After this call the
    same method writes ``display_000.png``, ``display_001.png``, ... instead.
    """
    out = Path(out_dir)
    counter = {"n": 0}

    def display_tensor_as_image(tensor, title=""):
        import matplotlib.pyplot as plt

        t = tensor.detach().cpu().float()
        if t.dim() == 3 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3 and t.shape[0] == 3:
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise UserError(f"expected a (3,H,W), (1,H,W) or (H,W) tensor, got {tuple(tensor.shape)}")
        lo, hi = float(t.min()), float(t.max())
        t = (t - lo) / (hi - lo) if hi > lo else t * 0
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"display_{counter['n']:03d}.png"
        plt.imsave(path, t.numpy(), cmap="gray" if t.dim() == 2 else None)
        counter["n"] += 1
        print(f"saved {title or 'image'} to {path}")
        return path

    dl_studio.display_tensor_as_image = display_tensor_as_image
    return out
