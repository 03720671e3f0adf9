"""One factory, one interface: every model — the study's networks, linear regression, the
`har` volatility model and the persistence / drift / climatology baselines — answers
`fit` and `predict_batch` (see `trainer.forecaster`); `trainer.artifacts` saves and loads them.

Networks have two heads trained together: the point forecast (MSE) and one output per
quantile level (pinball loss), both on scaled log-return targets. Keras is imported lazily
and only through Keras 3 APIs, so the same code runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from db.errors import ArtifactError, InputError
from trainer.baselines import Climatology, Drift, Persistence
from trainer.datasets import SampleSource
from trainer.features import Featurizer, fit_featurizer, input_columns, input_length, input_width
from trainer.forecaster import FitReport, Forecaster, timed_batches
from trainer.params import DataParams, ModelParams, TrainParams
from trainer.volatility import HAR_FEATURES, Har
from trainer.windows import WindowSet

KERAS_ARCHS: tuple[str, ...] = ("lstm", "gru", "cnn2", "cnn3", "cnn4")
BASELINES: frozenset[str] = frozenset({"persistence", "drift", "climatology"})
ARCHS: tuple[str, ...] = (*KERAS_ARCHS, "linear", "har", *sorted(BASELINES))
#: The model that serves before any model is trained, and the point-forecast reference.
PERSISTENCE = "persistence"
#: The reference of probabilistic skill.
CLIMATOLOGY = "climatology"

#: The study's Conv1D stacks as (kernel, stride); with 256 inputs each ends at length 16.
CNN_LAYERS: dict[str, tuple[tuple[int, int], ...]] = {
    "cnn2": ((20, 3), (16, 4)),
    "cnn3": ((8, 3), (8, 2), (8, 2)),
    "cnn4": ((2, 2), (2, 2), (2, 2), (2, 2)),
}


def _fit_featurizer(source: SampleSource, data: DataParams, needs_times: bool) -> Featurizer:
    if len(source) == 0:
        raise InputError("no training samples")
    bars = getattr(source, "bars", None)
    if needs_times and bars is None:
        raise InputError(
            f"data.inputs {', '.join(data.inputs)} need bar times, which HDF5 exports do not carry; train from bars"
        )
    return fit_featurizer(
        timed_batches(source, needs_times),
        features=input_columns(data.features, data.inputs),
        target=data.target,
        scaler=data.scaler,
        window=data.window,
        horizon=data.horizon,
        base=data.features,
        inputs=data.inputs,
        step=int(bars.step) if bars is not None else 0,
    )


class Linear(Forecaster):
    """scikit-learn least squares from the flattened scaled window to the 16 scaled targets.

    Only coefficients are stored (npz), never a pickle, so loading an artifact runs no code.
    """

    uses_featurizer = True

    def __init__(self, arch: str, params: ModelParams, data: DataParams) -> None:
        super().__init__(arch, params, data)
        self._coef: np.ndarray | None = None
        self._intercept: np.ndarray | None = None

    @property
    def _core_fitted(self) -> bool:
        return self._coef is not None

    def _fit(
        self,
        train: SampleSource,
        val: SampleSource | None,
        params: TrainParams,
        *,
        log_csv: Path | None,
        progress: bool,
    ) -> FitReport:
        from sklearn.linear_model import LinearRegression

        self.featurizer = f = _fit_featurizer(train, self.data, self.needs_times)
        xs, ys = [], []
        for raw, future, t in timed_batches(train, self.needs_times):
            xs.append(f.inputs(raw, t).reshape(raw.shape[0], -1))
            ys.append(f.targets(raw, future))
        x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)
        reg = LinearRegression().fit(x, y)
        self._coef, self._intercept = np.asarray(reg.coef_), np.asarray(reg.intercept_)
        loss = float(np.mean((self._raw_predict(x) - y) ** 2))
        val_loss: tuple[float, ...] = ()
        if val is not None and len(val):
            vx, vy = zip(
                *(
                    (f.inputs(r, t).reshape(r.shape[0], -1), f.targets(r, c))
                    for r, c, t in timed_batches(val, self.needs_times)
                ),
                strict=True,
            )
            val_loss = (float(np.mean((self._raw_predict(np.concatenate(vx)) - np.concatenate(vy)) ** 2)),)
        return FitReport(1, 1, (loss,), val_loss, 0.0, len(train))

    def _raw_predict(self, x: np.ndarray) -> np.ndarray:
        assert self._coef is not None and self._intercept is not None
        return np.asarray(x, dtype=np.float64) @ self._coef.T + self._intercept

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, None]:
        assert self.featurizer is not None
        x = self.featurizer.inputs(raw, times).reshape(raw.shape[0], -1)
        return self.featurizer.prices(self._raw_predict(x), raw), None

    def _write(self, directory: Path) -> None:
        assert self._coef is not None and self._intercept is not None
        np.savez(directory / "linear.npz", coef=self._coef, intercept=self._intercept)

    def _read(self, directory: Path) -> None:
        with np.load(directory / "linear.npz", allow_pickle=False) as z:
            coef, intercept = z["coef"], z["intercept"]
        assert self.featurizer is not None
        n_in = self.featurizer.input_length * _width(self.data)
        if coef.shape != (self.horizon, n_in) or intercept.shape != (self.horizon,):
            raise ArtifactError(
                f"{directory}: linear.npz has coefficients {coef.shape}, expected {(self.horizon, n_in)}"
            )
        self._coef, self._intercept = coef, intercept


def compile_network(net: Any, levels: tuple[float, ...], params: TrainParams) -> None:
    """The production training setup: Adam at the batch-scaled rate, point + pinball loss, XLA
    where Keras finds it pays ("auto": JAX, TensorFlow on a GPU; on a CPU it measured no faster for
    the recurrent nets), `steps_per_execution` batches per compiled call (not on PyTorch)."""
    import keras

    from trainer.batches import PointQuantileLoss

    net.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.scaled_learning_rate),
        loss=PointQuantileLoss(levels),
        jit_compile="auto",
        # PyTorch runs eagerly and takes one step per call
        steps_per_execution=1 if keras.config.backend() == "torch" else params.steps_per_execution,
    )


def _width(data: DataParams) -> int:
    """Input columns per step of a featurizer model."""
    return input_width(data.features, data.inputs) if data.target == "log_return" else len(data.features)


def _activation(name: str) -> Any:
    from keras import layers

    if name == "leaky_relu":
        return layers.LeakyReLU()
    return layers.Activation(name)


def build_network(arch: str, params: ModelParams, data: DataParams) -> Any:
    """The study's network for `arch`, uncompiled, with an output (H, 1 + L): the point forecast
    and one quantile per level of `params.quantiles`, per step. Recurrent layers keep the
    cuDNN-compatible defaults (tanh / sigmoid, no recurrent dropout, not unrolled, with bias;
    GRU reset_after) so TensorFlow picks the fused GPU kernel when one is there."""
    import keras
    from keras import layers

    steps, nf = input_length(data.window, data.target), _width(data)
    heads = 1 + len(params.quantiles)
    inputs = keras.Input(shape=(steps, nf), name="window")
    if arch in ("lstm", "gru"):
        common: dict[str, Any] = dict(
            activation="tanh",
            recurrent_activation="sigmoid",
            recurrent_dropout=0.0,
            unroll=False,
            use_bias=True,
        )
        rnn = (
            layers.LSTM(params.units, **common)
            if arch == "lstm"
            else layers.GRU(params.units, reset_after=True, **common)
        )
        x = rnn(inputs)
        x = layers.Activation("tanh")(x)
        x = layers.Dropout(params.dropout)(x)
        x = layers.Reshape((data.horizon, heads))(layers.Dense(data.horizon * heads)(x))
    elif arch in CNN_LAYERS:
        x = inputs
        spec = CNN_LAYERS[arch]
        length = steps
        for i, (kernel, stride) in enumerate(spec):
            if length < kernel:
                raise InputError(f"{arch}: window {data.window} is too short for its Conv1D stack")
            last = i == len(spec) - 1
            x = layers.Conv1D(
                heads if last else params.cnn_filters,
                kernel,
                strides=stride,
                activation=None if last else params.cnn_activation,
            )(x)
            length = (length - kernel) // stride + 1
            if not last:
                x = layers.Dropout(params.cnn_dropout)(x)
        # The study's stacks land exactly on 16 steps; other windows/horizons get a dense head.
        if length != data.horizon:
            x = layers.Reshape((data.horizon, heads))(layers.Dense(data.horizon * heads)(layers.Flatten()(x)))
    else:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    if params.output_activation != "linear":
        x = _activation(params.output_activation)(x)
    # Output in float32 even under mixed precision: the loss and the inverse scaling need it.
    outputs = layers.Activation("linear", dtype="float32", name="forecast")(x)
    return keras.Model(inputs, outputs, name=arch)


class KerasForecaster(Forecaster):
    """LSTM, GRU and the CNNs: Keras network (point + quantile heads) + featurizer."""

    residual_spread = False
    conformalizes = True
    uses_featurizer = True

    def __init__(self, arch: str, params: ModelParams, data: DataParams) -> None:
        super().__init__(arch, params, data)
        self.net: Any = None

    @property
    def _core_fitted(self) -> bool:
        return self.net is not None

    def _fit(
        self,
        train: SampleSource,
        val: SampleSource | None,
        params: TrainParams,
        *,
        log_csv: Path | None,
        progress: bool,
    ) -> FitReport:
        import keras

        from trainer.batches import FeatureBatches, RichProgress, WindowBatches

        keras.utils.set_random_seed(params.seed)
        self.featurizer = f = _fit_featurizer(train, self.data, self.needs_times)
        previous = keras.mixed_precision.global_policy()
        if params.mixed_precision:  # scoped to this network: layers keep the policy they were built with
            keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            net = build_network(self.arch, self.params, self.data)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        compile_network(net, self.levels, params)

        def batches(source: SampleSource, shuffle: bool) -> Any:
            if isinstance(source, WindowSet):  # bar-backed: featurized once, windows are views
                return WindowBatches(source, f, params.batch_size, shuffle=shuffle, seed=params.seed)
            # file-backed sources read whole chunks
            return FeatureBatches(source, f, params.batch_size, shuffle=shuffle, seed=params.seed, contiguous=True)

        train_ds = batches(train, True)
        has_val = val is not None and len(val) > 0
        val_ds = batches(val, False) if has_val and val is not None else None
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss" if has_val else "loss", patience=params.patience, restore_best_weights=True
        )
        callbacks: list[Any] = [stop]
        if progress:
            callbacks.append(RichProgress(self.arch, params.epochs))
        if log_csv is not None:
            Path(log_csv).parent.mkdir(parents=True, exist_ok=True)
            callbacks.append(keras.callbacks.CSVLogger(str(log_csv)))
        history = net.fit(train_ds, validation_data=val_ds, epochs=params.epochs, callbacks=callbacks, verbose=0)
        self.net = net
        h = history.history
        loss = tuple(float(v) for v in h.get("loss", []))
        val_loss = tuple(float(v) for v in h.get("val_loss", []))
        track = val_loss or loss
        best = int(np.argmin(track)) + 1 if track else None
        return FitReport(len(loss), best, loss, val_loss, 0.0, len(train))

    def _forecast(self, raw: np.ndarray, times: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One compiled forward pass for the whole batch (`predict_on_batch`, never `predict`)."""
        import keras

        assert self.featurizer is not None
        n = raw.shape[0]
        x = self.featurizer.inputs(raw, times)
        padded = 1 << (n - 1).bit_length()  # power-of-two batch shapes: a handful of traces, ever
        if padded != n:
            x = np.concatenate([x, np.repeat(x[-1:], padded - n, axis=0)])
        y = np.asarray(keras.ops.convert_to_numpy(self.net.predict_on_batch(x))[:n], dtype=np.float64)
        point = self.featurizer.prices(y[:, :, 0], raw)
        last = raw[:, -1, self.data.close_index][:, None]
        log_q = np.stack(
            [np.log(self.featurizer.prices(y[:, :, 1 + j], raw) / last) for j in range(len(self.levels))], axis=-1
        )
        return point, log_q

    def _write(self, directory: Path) -> None:
        self.net.save(directory / "model.keras")

    def _read(self, directory: Path) -> None:
        import keras

        try:
            net = keras.saving.load_model(directory / "model.keras", compile=False)
        except Exception as e:  # Keras raises many kinds for a damaged zip / config
            raise ArtifactError(
                f"{directory / 'model.keras'}: cannot be loaded: {type(e).__name__}: {e}"
            ) from None
        steps = input_length(self.window, self.data.target)
        want_in = (None, steps, _width(self.data))
        want_out = (None, self.horizon, 1 + len(self.levels))
        if tuple(net.input_shape) != want_in or tuple(net.output_shape) != want_out:
            raise ArtifactError(
                f"{directory / 'model.keras'}: network maps {net.input_shape} -> {net.output_shape}, "
                f"manifest says {want_in} -> {want_out}"
            )
        self.net = net


_CLASSES: dict[str, type[Forecaster]] = {
    **{a: KerasForecaster for a in KERAS_ARCHS},
    "linear": Linear,
    "har": Har,
    "persistence": Persistence,
    "drift": Drift,
    "climatology": Climatology,
}


def build_model(arch: str, params: ModelParams | None = None, data: DataParams | None = None) -> Forecaster:
    """The one factory: an unfitted model of `arch`."""
    try:
        cls = _CLASSES[arch]
    except KeyError:
        raise InputError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}") from None
    return cls(arch, params or ModelParams(), data or DataParams())


def model_features(arch: str, data: DataParams) -> tuple[str, ...]:
    """The bar columns a model of `arch` reads: the volatility model its own; the featurizer
    models (networks, linear) `data.features` and what `data.inputs` derive from; the rest
    `data.features`."""
    if arch == "har":
        return HAR_FEATURES
    cls = _CLASSES.get(arch)
    if cls is not None and cls.uses_featurizer:
        return input_columns(data.features, data.inputs)
    return data.features


def params_dict(model: Forecaster) -> dict[str, Any]:
    return {
        "model": {**asdict(model.params), "quantiles": list(model.params.quantiles)},
        "data": {**asdict(model.data), "features": list(model.data.features), "inputs": list(model.data.inputs)},
    }


__all__ = [
    "ARCHS",
    "BASELINES",
    "CLIMATOLOGY",
    "KERAS_ARCHS",
    "PERSISTENCE",
    "FitReport",
    "Forecaster",
    "build_model",
    "build_network",
    "model_features",
]
