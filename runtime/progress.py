"""A progress bar for sampling steps, tqdm-style on a terminal, without tqdm (the runtime needs numpy,
onnxruntime and Pillow only)::

    t2i  40%|████████            | 20/50 [00:08<00:12, 2.47 it/s]

:class:`Progress` is what :func:`~.sampler.sample` reports to (``start(total)``, ``update()`` per step,
``close()``); :class:`ProgressBar` draws one on a stream — stderr by default — and only when that stream
is a terminal, so piped or redirected output carries no bar and no carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

BAR_WIDTH = 20


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def update(self) -> None: ...
    def close(self) -> None: ...


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressBar:
    """A bar redrawn in place (``\\r``) on ``file`` at most every ``interval`` seconds, ended by a newline.

    ``enabled=None`` draws only when ``file`` is a terminal; ``False`` never draws. One bar may be
    started again (the next call of a loop); ``desc`` prefixes it.
    """

    def __init__(self, desc: str = "", file: TextIO | None = None, enabled: bool | None = None,
                 interval: float = 0.1):
        self.desc, self.file, self.interval = desc, file if file is not None else sys.stderr, interval
        if enabled is None:
            isatty = getattr(self.file, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total = self.done = 0
        self._t0 = self._drawn = 0.0

    def start(self, total: int) -> None:
        self.total, self.done = int(total), 0
        self._t0 = time.perf_counter()
        self._drawn = 0.0
        self._draw()

    def update(self) -> None:
        self.done += 1
        if self.done >= self.total or time.perf_counter() - self._drawn >= self.interval:
            self._draw()

    def close(self) -> None:
        if self.enabled and self.total:
            self.file.write("\n")
            self.file.flush()
        self.total = 0

    def line(self) -> str:
        """The bar as it is drawn now."""
        elapsed = time.perf_counter() - self._t0
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * BAR_WIDTH)
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        left = _clock((self.total - self.done) / rate) if rate else "?"
        speed = f"{rate:.2f} it/s" if rate >= 1 or not rate else f"{1 / rate:.2f} s/it"
        head = f"{self.desc} " if self.desc else ""
        return (f"{head}{frac:4.0%}|{'█' * filled}{' ' * (BAR_WIDTH - filled)}| {self.done}/{self.total} "
                f"[{_clock(elapsed)}<{left}, {speed}]")

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._drawn = time.perf_counter()
        self.file.write("\r" + self.line())
        self.file.flush()
