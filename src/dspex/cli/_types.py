"""argparse ``type`` functions of the ``dspex`` command: every number a flag takes is checked
when the flags are parsed, so an out-of-range value stops a command with one line naming the
flag and its range before anything is opened or contacted."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["int_at_least", "port_number", "positive_seconds", "seconds_at_least"]


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers ``>= low`` (the message names the range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def seconds_at_least(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` accepting finite seconds ``>= low`` (``> low`` when ``strict``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds, got {text!r}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
        if value < low or (strict and value == low):
            bound = f"more than {low:g}" if strict else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds, got {text}")
        return value

    return parse


positive_seconds = seconds_at_least(0.0, strict=True)
"""Seconds more than 0: a timeout, a lease, a TTL."""


def port_number(text: str) -> int:
    """An argparse ``type`` for a TCP port to listen on: 0 (any free port) to 65535."""
    value = int(text) if text.strip().lstrip("-").isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number from 0 to 65535 (0 = any free port), got {text!r}"
        )
    return value
