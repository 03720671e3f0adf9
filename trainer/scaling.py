"""Per-column affine scalers fit by streaming over training batches only.

A scaler is `(x - offset) / scale` per last-axis column: MinMax (offset = min,
scale = max - min, the study's choice), standard (mean, std), or rms (offset 0, scale = root
mean square; used for log-return targets so that an output of 0 means "no change" and an
untrained network starts out as the persistence forecast). Fitting streams so an
HDF5 training set never has to be loaded whole; the result is plain numbers that go into
the artifact manifest as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from db.errors import ArtifactError
from trainer.params import SCALERS


@dataclass(frozen=True, slots=True)
class Scaler:
    kind: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - np.asarray(self.offset)) / np.asarray(self.scale)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y * np.asarray(self.scale) + np.asarray(self.offset)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": list(self.offset), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: Any) -> Scaler:
        try:
            kind, offset, scale = (
                d["kind"],
                tuple(float(v) for v in d["offset"]),
                tuple(float(v) for v in d["scale"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"scaler description {d!r} is malformed: {e}") from None
        if kind not in (*SCALERS, "rms") or len(offset) != len(scale) or not all(np.isfinite(scale)) or 0.0 in scale:
            raise ArtifactError(f"scaler description {d!r} is invalid")
        return cls(kind, offset, scale)


@dataclass(slots=True)
class ScalerFitter:
    """Accumulates column statistics over batches shaped (..., columns)."""

    kind: str
    count: int = 0
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    _shift: np.ndarray | None = field(default=None, repr=False)

    def update(self, x: np.ndarray) -> None:
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        if flat.shape[0] == 0:
            return
        if self.lo is None:
            self.lo, self.hi = flat.min(axis=0), flat.max(axis=0)
            self._shift = flat[0].copy()  # shifted sums keep the variance numerically sound
            self.total = np.zeros(flat.shape[1])
            self.total_sq = np.zeros(flat.shape[1])
        else:
            assert self.hi is not None
            self.lo = np.minimum(self.lo, flat.min(axis=0))
            self.hi = np.maximum(self.hi, flat.max(axis=0))
        assert self.total is not None and self.total_sq is not None and self._shift is not None
        d = flat - self._shift
        self.total += d.sum(axis=0)
        self.total_sq += (d * d).sum(axis=0)
        self.count += flat.shape[0]

    def finish(self) -> Scaler:
        if (
            self.lo is None
            or self.hi is None
            or self.total is None
            or self.total_sq is None
            or self._shift is None
        ):
            raise ValueError("no training data to fit the scaler on")
        if self.kind == "minmax":
            offset, scale = self.lo, self.hi - self.lo
        elif self.kind == "rms":
            mean_sq = (self.total_sq + 2 * self._shift * self.total) / self.count + self._shift**2
            offset, scale = np.zeros_like(self.lo), np.sqrt(np.maximum(mean_sq, 0.0))
        else:
            mean_d = self.total / self.count
            offset = mean_d + self._shift
            scale = np.sqrt(np.maximum(self.total_sq / self.count - mean_d**2, 0.0))
        scale = np.where(scale > 0, scale, 1.0)  # a constant column passes through shifted
        return Scaler(self.kind, tuple(float(v) for v in offset), tuple(float(v) for v in scale))


def fit_scaler(kind: str, x: np.ndarray) -> Scaler:
    fitter = ScalerFitter(kind)
    fitter.update(x)
    return fitter.finish()
