"""Formatting shared by the CLI table and benchmarks/report.py. Imports nothing heavy (no torch), so
report.py renders results on any machine."""

from __future__ import annotations


def fmt_bytes(n) -> str:
    """1536 -> "1.5 KB"; None -> "-"."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def fmt_time(s) -> str:
    """Seconds with a unit that keeps 3 significant figures; None/NaN -> "-"."""
    if s is None or s != s:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def fmt_ratio(num, den) -> str:
    """num / den as "1.23x" (the speed-up of den over num); "-" when either is missing."""
    if not num or not den:
        return "-"
    return f"{num / den:.2f}x"


def fmt_rate(tflops, device_type: str, pct_peak=None) -> str:
    """Achieved rate: TFLOP/s (and % of peak) on GPUs, GFLOP/s on CPUs."""
    if tflops is None:
        return "-"
    if device_type != "cuda":
        return f"{tflops * 1e3:.3g} GFLOP/s"
    text = f"{tflops:.3g} TFLOP/s"
    return text + (f" ({pct_peak:.0f}%)" if pct_peak is not None else "")
