"""What every report figure shares: a headless pyplot, an atomic save, the running mean."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import save_figure


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


def save_plot(fig, path: Path) -> Path:
    """Lay out, save atomically as PNG (100 dpi) and close ``fig``; return ``path``."""
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    pyplot().close(fig)
    return path
