"""A progress bar on stderr with rate and ETA, shared by the commands (`bench losses`, `prepare`).

    bar = progress(total, "prepare", unit="images", min_interval=0.2)
    for item in work:
        ...
        bar.step("shard 3")          # one unit done; the label is shown after the figures
    bar.close()

tqdm draws it when installed; otherwise `Bar` does: redrawn in place on a terminal, one line per draw
otherwise (a log file). `min_interval` (seconds) limits how often it is drawn, so a loop of many fast
steps does not spend its time writing to the terminal, nor fill a log with a line per image; the last
step is always drawn. Only the standard library is imported here.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Bar", "progress"]


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Bar:
    """The fallback bar: `desc [####....] n/total  rate unit/s  ETA m:ss  label`."""

    width = 24

    def __init__(self, total: int, desc: str, unit: str = "it", min_interval: float = 0.0, file=None,
                 start: float | None = None):
        self.total, self.desc, self.unit, self.min_interval = total, desc, unit, min_interval
        self.file = file if file is not None else sys.stderr
        self.n, self.last_draw = 0, float("-inf")
        self.t0 = time.perf_counter() if start is None else start
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.drawn = False

    def text(self, label: str = "") -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        filled = int(self.width * self.n / max(self.total, 1))
        return (f"{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] {self.n}/{self.total} "
                f"{rate:.2f} {self.unit}/s ETA {_clock(eta)} {label}").rstrip()

    def step(self, label: str = "", n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last_draw < self.min_interval and self.n < self.total:
            return
        self.last_draw = now
        text = self.text(label)
        if self.tty:
            self.file.write("\r" + text[:150].ljust(150))
        else:
            self.file.write(text + "\n")
        self.file.flush()
        self.drawn = True

    def close(self) -> None:
        if self.tty and self.drawn:
            self.file.write("\n")
            self.file.flush()


class _Tqdm:
    def __init__(self, total: int, desc: str, unit: str, min_interval: float, start: float | None = None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, unit=unit, mininterval=max(min_interval, 0.1))
        if start is not None:  # tqdm's clock is time.time(): the same instant on it
            self.bar.start_t -= time.perf_counter() - start

    def step(self, label: str = "", n: int = 1) -> None:
        if label:
            self.bar.set_postfix_str(label, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def progress(total: int, desc: str, unit: str = "it", min_interval: float = 0.0, start: float | None = None):
    """tqdm when installed, else `Bar`; both have step(label="", n=1) and close(). start: the
    time.perf_counter() the rate counts from (default: now), so a bar created after some set-up reports the
    rate of the whole run."""
    try:
        return _Tqdm(total, desc, unit, min_interval, start)
    except ImportError:
        return Bar(total, desc, unit, min_interval, start=start)
