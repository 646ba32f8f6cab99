"""What every report figure shares: a headless pyplot, an atomic save, the running mean, the class colours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import save_figure

#: One colour per class (RGB in [0, 1]), the same in every figure, overlay and legend; class k takes row k % 10.
CLASS_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                          [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]], np.float32) / 255


def running_mean(values, window: int) -> np.ndarray:
    """Trailing mean over ``window`` iterations (shorter at the start): the running loss."""
    v = np.asarray(values, dtype=float)
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def class_legend(fig, class_names, fontsize: float = 8) -> float:
    """A legend of the class colours along the bottom of ``fig``; returns the height (a fraction of the
    figure) it takes, to keep the panels above it."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=CLASS_COLOURS[k % len(CLASS_COLOURS)], label=name) for k, name in enumerate(class_names)]
    ncol = min(len(handles), 8)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=fontsize, frameon=False,
               title="class colours", title_fontsize=fontsize, borderaxespad=0.2)
    rows = -(-len(handles) // ncol) + 1
    return min(0.4, rows * fontsize * 1.9 / 72 / fig.get_figheight())


def save_plot(fig, path: Path, bottom: float = 0.0) -> Path:
    """Lay out (above ``bottom``, a fraction kept for a legend), save atomically as PNG (100 dpi) and close ``fig``;
    return ``path``."""
    fig.tight_layout(rect=(0, bottom, 1, 1))
    save_figure(fig, path, dpi=100)
    pyplot().close(fig)
    return path
