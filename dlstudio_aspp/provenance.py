"""How a run was made: the command, the software, the machine and the time each phase took.

:func:`provenance` is recorded in every run card and in ``grid.json``; the reports print it.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional


def _version(module: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or no metadata (a folder dropped next to a script)
        return None


def _git_commit() -> Optional[str]:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def command_line() -> str:
    """This process's command line, as a run's provenance records it (the program's name, then its arguments)."""
    return " ".join([Path(sys.argv[0]).name] + sys.argv[1:])


def provenance(command: Optional[str] = None, device=None) -> Dict:
    """The command line (or the API call) and the folder it ran in, versions, CUDA/cuDNN, device and threads, now."""
    import torch

    from . import __version__

    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = torch.cuda.is_available()
    return {
        "command": command if command is not None else command_line(),
        "dlstudio_aspp": __version__, "git_commit": _git_commit(),
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": _version("torchvision"),
        "DLStudio": _version("DLStudio"), "numpy": _version("numpy"),
        "cuda": str(torch.version.cuda) if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
        "threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "host": platform.node(), "cwd": os.getcwd(),
    }
