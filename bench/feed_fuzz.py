"""Hostile frames at full size: ≥ 100k mutated real frames per exchange through `parse`.

Prints per exchange: frames tried, escaped exceptions (must be 0), invalid trades produced (0),
trades from poisoned frames (0), rejects by reason, the slowest frame and how many took > 20 ms.
Exits 1 if any invariant is broken or a frame's parse takes longer than 20 ms (the slowest frames
of the pass are re-timed best of 5, so a GC pause or a busy neighbour does not count as parse cost).

    python bench/feed_fuzz.py [--frames 100000] [--seed 0] [--exchange binance]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon.feeds import PROTOCOLS  # noqa: E402
from db.csvbars import read_bars_csv  # noqa: E402
from tests.daemon.framefuzz import Mutator, fuzz, seed_frames  # noqa: E402

SHARED = ROOT.parent / "shared"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exchange", action="append", choices=sorted(PROTOCOLS))
    args = ap.parse_args()
    bars = read_bars_csv(
        SHARED / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv", exchange="x", symbol="BTC-USDT", interval="5m"
    )[:200]
    failed = False
    print(f"{args.frames:,} mutated frames per exchange (seed {args.seed}), one core")
    for exchange in args.exchange or sorted(PROTOCOLS):
        t0 = time.perf_counter()
        mut = Mutator(exchange, seed_frames(SHARED, exchange, bars), seed=args.seed)
        frames = list(mut.frames(args.frames))
        gc.collect()
        rep = fuzz(exchange, iter(frames))
        wall = time.perf_counter() - t0
        rejected = sum(rep.reasons.values())
        retimed = rep.retime()
        worst, worst_frame = retimed[0]
        print(
            f"\n{exchange}: frames {rep.frames:,}  escapes {rep.escapes}  invalid trades {rep.bad_trades}  "
            f"trades from poisoned frames {rep.poisoned_trades}  uncounted rejects {rep.uncounted}\n"
            f"  kinds {dict(rep.kinds)}  trades {rep.trades:,}\n"
            f"  slowest frame {worst * 1e3:.2f} ms (best of 5; {worst_frame.mutation}, "
            f"{len(worst_frame.text):,} chars); "
            f"single pass: slowest {rep.slowest_s * 1e3:.2f} ms ({rep.slowest_mutation}), {rep.over_20ms} over 20 ms"
            f"  ({wall:.1f} s wall incl. generation)\n"
            f"  rejected {rejected:,} by reason:"
        )
        for reason, n in rep.reasons.most_common():
            print(f"    {n:>8,}  {reason}")
        for ex in rep.examples:
            print(f"  ! {ex[:300]}")
        failed |= bool(rep.escapes or rep.bad_trades or rep.poisoned_trades or rep.uncounted or worst > 0.020)
        failed |= any(r.startswith("internal_error") for r in rep.reasons)
    print("\nFAILED" if failed else "\nall invariants held")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
