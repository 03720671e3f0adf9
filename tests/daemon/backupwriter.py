"""A writer for `barcast db backup` tests, run as its own process (`python -m tests.daemon.backupwriter
DB STOP`): until the file STOP exists, a new BTC bar after the newest, then the persistence
forecast issued on it, each its own transaction, as a live daemon stores them."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from db.bars import read_bars, upsert_bars
from db.engine import open_database
from db.forecasts import insert_forecasts
from tests.daemon.opsdata import BTC, PERSISTENCE, forecasts_for


def main(url: str, stop: Path) -> None:
    database = open_database(url, create=False)
    bars = read_bars(database, BTC, limit=64, newest_first=True)[::-1]
    try:
        while not stop.exists():
            last = bars[-1]
            close = last.close + Decimal("0.01")
            bar = replace(last, open_time=last.open_time + BTC.step, open=last.close, high=close, low=last.close,
                          close=close, source="live")
            bars = [*bars[1:], bar]
            upsert_bars(database, [bar])
            insert_forecasts(database, [forecasts_for(bars, len(bars) - 1, PERSISTENCE, datetime.now(UTC))])
            time.sleep(0.001)
    finally:
        database.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
