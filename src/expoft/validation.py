"""Checks that config dataclasses share (they validate themselves in ``__post_init__``)."""

from __future__ import annotations


def require_at_least(config: object, minimum: int, *names: str) -> None:
    """Each named field of ``config`` must be ``>= minimum``; the error names the first that is not."""
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def require_positive(config: object, *names: str) -> None:
    """Each named field of ``config`` must be ``> 0`` (a NaN is not); the error names the first that is not."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
