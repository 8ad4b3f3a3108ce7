"""Argument checks shared by the embedding modules."""

from __future__ import annotations

from tahoeflow.errors import ArgumentError


def positive_int(name: str, value: object) -> int:
    """``value`` as an int; an :class:`ArgumentError` about ``name`` unless it is a whole number >= 1."""
    try:
        whole = int(value) == value  # type: ignore[call-overload]
    except (TypeError, ValueError):
        whole = False
    if not whole or value < 1:  # type: ignore[operator]
        raise ArgumentError(name, f"must be a positive integer, got {value!r}")
    return int(value)  # type: ignore[call-overload]
