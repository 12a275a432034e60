"""A dependency-free text progress bar on stderr for long training steps."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`[#####.....]  50/100  12.3 s  loss 0.41` redrawn in place; a no-op when `stream` is None.

    On a terminal the bar is redrawn with a carriage return; into a file or pipe it
    writes one line per ~10 % so logs stay readable.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = sys.stderr, width: int = 24) -> None:
        self.total = max(1, int(total))
        self.label = label
        self.stream = stream
        self.width = width
        self.t0 = time.perf_counter()
        self.done = 0
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._last_decile = -1

    def update(self, done: int, note: str = "") -> None:
        self.done = min(int(done), self.total)
        if self.stream is None:
            return
        frac = self.done / self.total
        decile = int(frac * 10)
        if not self._tty and decile == self._last_decile and self.done < self.total:
            return
        self._last_decile = decile
        filled = int(round(frac * self.width))
        text = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total}"
            f"  {time.perf_counter() - self.t0:6.1f} s" + (f"  {note}" if note else "")
        )
        if self._tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, note: str = "") -> None:
        """Draw the final state (also when stopped early) and end the line."""
        if self.stream is None:
            return
        if self.done < self.total or note:
            self._last_decile = -1
            self.update(self.done, note)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
