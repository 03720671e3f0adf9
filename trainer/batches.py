"""Keras batch feeders (import keras; only loaded to train).

`WindowBatches` is the training fast path for bar-backed samples: the bar array is featurized
and scaled once, each window is a zero-copy view of that one array and a batch is a single
fancy-index copy, so an epoch costs the network's time, not numpy's. `FeatureBatches` serves
file-backed samples (HDF5) by featurizing raw windows batch by batch.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from trainer.datasets import SampleSource
from trainer.features import Featurizer
from trainer.windows import WindowSet, window_view


class FeatureBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of (scaled inputs, scaled targets) from any `SampleSource`.

    `contiguous=True` (HDF5) keeps each batch a contiguous row range and shuffles the order of
    batches instead of samples, so every read is a chunk read. Shuffling within the training
    split is seeded, so the same seed gives the same batches.
    """

    def __init__(
        self,
        source: SampleSource,
        featurizer: Featurizer,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        contiguous: bool = False,
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.source = source
        self.featurizer = featurizer
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.contiguous = contiguous
        self._rng = np.random.default_rng(seed)
        self._n_batches = math.ceil(len(source) / batch_size)
        self._order = np.arange(len(source))
        self._batch_order = np.arange(self._n_batches)
        self._reshuffle()

    def _reshuffle(self) -> None:
        if not self.shuffle:
            return
        if self.contiguous:
            self._batch_order = self._rng.permutation(self._n_batches)
        else:
            self._order = self._rng.permutation(len(self.source))

    def __len__(self) -> int:
        return self._n_batches

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.contiguous:
            b = int(self._batch_order[i])
            index: np.ndarray | slice = slice(
                b * self.batch_size, min((b + 1) * self.batch_size, len(self.source))
            )
        else:
            index = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        raw, future = self.source.batch(index)
        return self.featurizer.inputs(raw), self.featurizer.targets(raw, future)

    def on_epoch_end(self) -> None:
        self._reshuffle()


class WindowBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of (scaled inputs, scaled targets) of a `WindowSet`, sliced from its bar array
    featurized once; the same numbers `Featurizer.inputs` gives for the windows (a test checks).
    Shuffling is seeded (same seed, same batches)."""

    def __init__(
        self, source: WindowSet, featurizer: Featurizer, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        bars, f = source.bars, featurizer
        if bars.features != f.features or source.window != f.window or source.horizon != f.horizon:
            raise ValueError(f"samples {bars.features} {source.window}->{source.horizon} do not fit the featurizer")
        length = f.input_length
        self.view = window_view(f.bar_inputs(bars.values, bars.times), length)  # (rows, length, k), no copy
        # Window o holds bars o-W+1..o; its first input row is o-W+1 in both target modes (log-return
        # inputs of bar t sit in row t-1 and start at the window's second bar; price inputs in row t).
        self.starts = source.origins - (f.window - 1)
        origins = source.origins
        last = bars.values[origins][:, None, :]
        future = bars.close[origins[:, None] + np.arange(1, f.horizon + 1)]
        self.y = f.targets(last, future)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._rng.permutation(len(origins)) if shuffle else np.arange(len(origins))

    def __len__(self) -> int:
        return math.ceil(len(self._order) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.view[self.starts[idx]], self.y[idx]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._order = self._rng.permutation(len(self._order))


@keras.saving.register_keras_serializable(package="barcast")
class PointQuantileLoss(keras.losses.Loss):  # type: ignore[misc]
    """MSE of the point head plus the mean pinball loss of the quantile heads.

    `y_pred` is (n, H, 1 + L): [..., 0] the point, [..., 1:] one quantile per level; `y_true`
    is (n, H). Keras ops only, so it runs on every backend.
    """

    def __init__(self, levels: tuple[float, ...] | list[float], name: str = "point_quantile", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.levels = tuple(float(x) for x in levels)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        y = ops.expand_dims(ops.cast(y_true, y_pred.dtype), -1)
        point = y_pred[..., :1]
        q = y_pred[..., 1:]
        tau = ops.reshape(ops.convert_to_tensor(self.levels, dtype=y_pred.dtype), (1, 1, -1))
        d = y - q
        pin = ops.maximum(tau * d, (tau - 1.0) * d)
        return ops.mean(ops.square(y - point), axis=(-2, -1)) + ops.mean(pin, axis=(-2, -1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "levels": list(self.levels)}


class RichProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """A progress bar on stderr (stdout stays clean for `--format json`)."""

    def __init__(self, title: str, epochs: int) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.title = title
        self.epochs = epochs
        console = Console(stderr=True)  # off (no output at all) when stderr is not a terminal
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"), console=console, transient=True, disable=not console.is_terminal,
        )
        self.task: Any = None
        self.steps = 0

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.progress.start()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        total = self.params.get("steps") if self.params else None
        desc = f"{self.title} epoch {epoch + 1}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=total, loss="")
        else:
            self.progress.reset(self.task, total=total, description=desc)

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if self.task is not None:
            loss = f"loss {logs['loss']:.4f}" if logs and "loss" in logs else ""
            self.progress.update(self.task, completed=batch + 1, loss=loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "val_loss")]
        self.progress.console.print(f"{self.title} epoch {epoch + 1}: {', '.join(parts)}")

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        self.progress.stop()
