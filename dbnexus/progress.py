"""A minimal terminal progress bar for long operations (migrate, rebalance)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Draws ``label [#####.....] done/total`` on a terminal; silent when disabled.

    ``enabled=None`` means: draw only when the stream is a terminal.
    """

    def __init__(
        self, label: str, total: int, *, enabled: bool | None = None, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = isatty if enabled is None else enabled
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self._last = 0.0
        self._tty = isatty

    def advance(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more units done and redraw (at most ten times a second on a tty)."""
        self.done += n
        now = time.monotonic()
        if self.enabled and (not self._tty or now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self._draw(note)

    def _draw(self, note: str) -> None:
        width = 30
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * width)
        line = f"{self.label} [{bar:<{width}}] {self.done}/{self.total} {note}".rstrip()
        if self._tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
