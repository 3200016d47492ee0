"""A plain-text progress bar on stderr: steps done, the step running, time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`advance(label)` before each step; `done()` at the end. Redraws in place on a tty."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.out, self.width = max(1, total), out, width
        self.step = 0
        self.started = time.monotonic()
        self.tty = out.isatty()

    def _clock(self, seconds: float) -> str:
        return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"

    def advance(self, label: str) -> None:
        elapsed = time.monotonic() - self.started
        filled = self.width * self.step // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        left = elapsed / self.step * (self.total - self.step) if self.step else 0.0
        eta = f", ~{self._clock(left)} left" if self.step else ""
        line = f"[{bar}] {self.step}/{self.total} {label} ({self._clock(elapsed)}{eta})"
        self.step += 1
        if self.tty:
            self.out.write("\r\x1b[K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line of its own (a warning), without breaking the bar."""
        self.out.write(("\n" if self.tty else "") + text + "\n")
        self.out.flush()

    def done(self) -> None:
        elapsed = self._clock(time.monotonic() - self.started)
        bar = "#" * self.width
        end = f"[{bar}] {self.total}/{self.total} done in {elapsed}"
        self.out.write(("\r\x1b[K" if self.tty else "") + end + "\n")
        self.out.flush()
