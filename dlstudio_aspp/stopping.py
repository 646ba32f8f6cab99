"""Stopping a run cleanly: signals set a flag, the loop stops between iterations."""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional


class StopRequests:
    """While training runs in the main thread, SIGINT, SIGTERM and SIGHUP only set a flag.

    The loop checks it between iterations, saves a checkpoint of the last finished
    iteration there and stops (:class:`Interrupted`), so a signal that lands inside a step
    (between the optimizer's update and the iteration count, or halfway through the
    parameters) can never produce a checkpoint that disagrees with its weights. A second
    signal stops at once, without a new checkpoint. Elsewhere (another thread) the
    handlers cannot be installed and Python's own handling applies.
    """

    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

    def __init__(self) -> None:
        self.requested: Optional[int] = None
        self.previous: Dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint of its last finished iteration."""
