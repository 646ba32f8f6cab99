"""Named crash points, for tests that kill the process the way the world does (SIGKILL: no handler runs).

``DLSTUDIO_ASPP_CRASH=NAME:K`` makes the process SIGKILL itself at the K-th time it passes ``point(NAME)``
(K from 1; ``NAME`` alone means K=1). Unset, :func:`point` does nothing but read one environment variable.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "DLSTUDIO_ASPP_CRASH"
_hits: Counter = Counter()


def point(name: str) -> None:
    """Pass the crash point ``name``: SIGKILL this process here if ``DLSTUDIO_ASPP_CRASH`` asks for this hit."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, k = wanted.partition(":")
    if target != name:
        return
    _hits[name] += 1
    if _hits[name] == int(k or 1):
        os.kill(os.getpid(), signal.SIGKILL)
