"""Chronological train / validation / test splits over forecast origins.

Bars are cut by time at fractions of the series; a sample belongs to a split only when all
its *targets* fall inside that split (its inputs may look back into earlier splits, which
is information a live forecaster has too). So no training target lies in validation or
test time, and the scaler, fit on training samples, sees nothing after the first cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from db.errors import InputError
from trainer.windows import WindowSet


@dataclass(frozen=True, slots=True)
class SplitIndex:
    """Bar indices where validation and test begin."""

    val_start: int
    test_start: int
    n_bars: int

    @classmethod
    def from_fractions(cls, n_bars: int, train_frac: float, val_frac: float) -> SplitIndex:
        val_start = int(n_bars * train_frac)
        test_start = int(n_bars * (train_frac + val_frac))
        return cls(val_start, test_start, n_bars)

    @classmethod
    def holdout(cls, n_bars: int, holdout_bars: int, val_frac: float = 0.1) -> SplitIndex:
        """The last `holdout_bars` bars are the test split; validation is `val_frac` of the rest."""
        if not 0 < holdout_bars < n_bars:
            raise InputError(f"holdout of {holdout_bars} bars does not fit {n_bars} bars")
        test_start = n_bars - holdout_bars
        return cls(test_start - int(test_start * val_frac), test_start, n_bars)


@dataclass(frozen=True, slots=True)
class Splits:
    train: WindowSet
    val: WindowSet
    test: WindowSet
    index: SplitIndex


def split_windows(samples: WindowSet, index: SplitIndex) -> Splits:
    o = samples.origins
    first_target, last_target = o + 1, o + samples.horizon
    train = last_target < index.val_start
    val = (first_target >= index.val_start) & (last_target < index.test_start)
    test = first_target >= index.test_start
    return Splits(samples.subset(train), samples.subset(val), samples.subset(test), index)


def split_by_fraction(samples: WindowSet, train_frac: float, val_frac: float) -> Splits:
    splits = split_windows(samples, SplitIndex.from_fractions(len(samples.bars), train_frac, val_frac))
    if len(splits.train) == 0:
        raise InputError(
            f"no training windows: {len(samples.bars)} bars with train_frac {train_frac} leave no gap-free "
            f"run of {samples.window + samples.horizon} bars"
        )
    return splits


def strided(samples: WindowSet, stride: int) -> WindowSet:
    return samples if stride <= 1 else samples.subset(np.s_[::stride])
