"""Real bars for the trainer tests: slices of the shared 5-minute BTC/USDT file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trainer.datasets import read_csv_frame

BTC_5M = "btcusdt_binance_5m_2020-12_2021-07.csv"


@pytest.fixture(scope="session")
def btc_csv(shared_dir: Path) -> Path:
    return shared_dir / "data" / BTC_5M


@pytest.fixture(scope="session")
def btc_frame(btc_csv: Path) -> pd.DataFrame:
    return read_csv_frame(btc_csv)


@pytest.fixture(scope="session")
def gap_frame(btc_frame: pd.DataFrame) -> pd.DataFrame:
    """2020-12-19 .. 2020-12-27: about 2,200 real bars around two real gaps (46 and 12 bars)."""
    return btc_frame.loc["2020-12-19":"2020-12-26"]


@pytest.fixture(scope="session")
def small_frame(btc_frame: pd.DataFrame) -> pd.DataFrame:
    """About 1,200 real gap-free bars (2021-01-10 .. 2021-01-14) for fast training."""
    return btc_frame.loc["2021-01-10":"2021-01-13"]
