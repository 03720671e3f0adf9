"""Peak memory of building every 256 → 16 window of the 65k-bar file: zero-copy views (ours)
vs the study's PastSampler-style materialised copies. Prints both and the ratio.

    python bench/window_memory.py [CSV]
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.datasets import csv_bars
from trainer.windows import materialised_windows, window_set

DEFAULT_CSV = Path(__file__).resolve().parents[1].parent / "shared/data/btcusdt_binance_5m_2020-12_2021-07.csv"


def peak(fn: Callable[[], Any]) -> tuple[int, float, Any]:
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top, seconds, result


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    bars = csv_bars(path, ("close",))
    ours_peak, ours_s, samples = peak(lambda: (lambda s: (s, s._view()))(window_set(bars, 256, 16)))
    theirs_peak, theirs_s, (x, _y) = peak(lambda: materialised_windows(bars.values, 256, 16))
    print(f"bars: {len(bars):,}; gap-free samples (ours): {len(samples[0]):,}; PastSampler rows: {x.shape[0]:,}")
    print(f"views (ours):        peak {ours_peak / 2**20:9.2f} MiB in {ours_s * 1000:7.1f} ms")
    print(f"materialised copies: peak {theirs_peak / 2**20:9.2f} MiB in {theirs_s * 1000:7.1f} ms")
    print(f"ratio materialised / views: {theirs_peak / max(ours_peak, 1):,.0f}x memory")


if __name__ == "__main__":
    main()
