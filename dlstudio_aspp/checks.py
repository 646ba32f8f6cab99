"""Option checks: each takes a value and returns what is wrong with it as text, or None.

Used by the option declarations (:mod:`dlstudio_aspp.spec`, the grid's settings); the caller puts the
flag's name in front of the text."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence


def int_at_least(low: int, high: Optional[int] = None) -> Callable[[Any], Optional[str]]:
    def check(v):
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            return f"must be an int >= {low}" + (f" and <= {high}" if high is not None else "") + f", got {v!r}"
        return None
    return check


def number(low: float, *, strict: bool, high: Optional[float] = None) -> Callable[[Any], Optional[str]]:
    def check(v):
        if v is None:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > low if strict else v >= low) and (high is None or v < high)
        if not ok:
            bound = f"> {low}" if strict else f">= {low}"
            return f"must be a finite number {bound}" + (f" and < {high}" if high is not None else "") + f", got {v!r}"
        return None
    return check


def probability(v) -> Optional[str]:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
    return None if ok else f"must be a probability, from 0 to 1, got {v!r}"


def one_of(values: Callable[[], Sequence[str]]) -> Callable[[Any], Optional[str]]:
    """A check against the valid values as they are when it runs (a registry may have grown)."""
    return lambda v: None if v in values() else f"must be one of {', '.join(values())}, got {v!r}"
