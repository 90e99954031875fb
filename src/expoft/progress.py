"""Progress display for long work (tqdm on stderr, silent when disabled or not a terminal)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """A counter with rate and ETA; extra figures go in with :meth:`set`."""

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0):
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set(self, **figures) -> None:
        """Show figures such as ``success=0.8`` next to the bar."""
        self._bar.set_postfix(figures, refresh=False)

    def close(self) -> None:
        self._bar.close()
