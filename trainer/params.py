"""Hyper-parameters of the trainer as frozen dataclasses.

They are plain typed fields with defaults so the daemon's config tree can embed them as
sections unchanged (its validation is generic over field types). Defaults follow the
study (khuangaf/CryptocurrencyPrediction: 256 → 16, LSTM/GRU 50 units, dropout 0.2,
CNN filters 8 with dropout 0.5, Adam + MSE, MinMax scaling) except where the study was
wrong for a live system: targets are log-returns (the study's scaled prices are the
`target = "price"` option), the scaler is fit on the training split only, and the batch
is 512 instead of 8 with a matched learning rate (throughput; see bench/train_throughput.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from db.errors import ConfigError
from trainer.quantiles import DEFAULT_LEVELS, check_levels

#: Bar columns a model may use as input features, in the order of `db.bars.bars_frame`.
FEATURE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume", "trade_count")
PRICE_COLUMNS: frozenset[str] = frozenset({"open", "high", "low", "close"})
#: Derived per-bar network inputs (`data.inputs`) and the bar columns each reads; each is a
#: function of the bar and the one before it, see `trainer.features.per_bar_inputs`.
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "log_range": ("open", "high", "low", "close"),  # log Garman-Klass volatility of the bar
    "log_abs_return": ("close",),
    "log_volume": ("volume",),
    "log_trades": ("trade_count",),
    "time_of_day": (),  # sin, cos
    "day_of_week": (),  # sin, cos
}
CALENDAR_INPUTS: frozenset[str] = frozenset({"time_of_day", "day_of_week"})
TARGETS: tuple[str, ...] = ("log_return", "price")
SCALERS: tuple[str, ...] = ("minmax", "standard")
#: The batch size `train.learning_rate` is given for.
REFERENCE_BATCH = 64
ACTIVATIONS: tuple[str, ...] = ("relu", "leaky_relu", "tanh", "linear")


def _check_choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{section}.{key} = {value!r}: expected one of {', '.join(choices)}")


def _check_positive(section: str, key: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{section}.{key} = {value!r}: must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True, slots=True)
class DataParams:
    """What a model sees: window length, horizon, features, target form and scaling."""

    window: int = 256
    horizon: int = 16
    features: tuple[str, ...] = ("close",)
    #: Derived per-bar inputs of the featurizer models (networks, linear) besides `features`.
    inputs: tuple[str, ...] = ()
    target: str = "log_return"
    scaler: str = "minmax"
    #: Forward-fill gaps of at most this many missing bars (0: every gap breaks windows).
    fill_gaps: int = 0
    train_frac: float = 0.7
    val_frac: float = 0.1

    def __post_init__(self) -> None:
        _check_positive("data", "window", self.window)
        if self.window < 2:
            raise ConfigError(f"data.window = {self.window}: must be >= 2")
        _check_positive("data", "horizon", self.horizon)
        _check_positive("data", "fill_gaps", self.fill_gaps, allow_zero=True)
        _check_choice("data", "target", self.target, TARGETS)
        _check_choice("data", "scaler", self.scaler, SCALERS)
        if not self.features:
            raise ConfigError("data.features is empty: give at least 'close'")
        for f in self.features:
            _check_choice("data", "features", f, FEATURE_COLUMNS)
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"data.features {self.features!r} repeats a column")
        if "close" not in self.features:
            raise ConfigError(f"data.features {self.features!r} must include 'close' (the forecast target)")
        for name in self.inputs:
            _check_choice("data", "inputs", name, tuple(INPUT_COLUMNS))
        if len(set(self.inputs)) != len(self.inputs):
            raise ConfigError(f"data.inputs {self.inputs!r} repeats an input")
        if self.inputs and self.target != "log_return":
            raise ConfigError("data.inputs need data.target = 'log_return' (they are per-bar log quantities)")
        if not (0 < self.train_frac < 1 and 0 <= self.val_frac < 1 and self.train_frac + self.val_frac < 1):
            raise ConfigError(
                f"data.train_frac = {self.train_frac}, data.val_frac = {self.val_frac}: need "
                "0 < train_frac, 0 <= val_frac and train_frac + val_frac < 1 (the rest is the test split)"
            )

    @property
    def close_index(self) -> int:
        return self.features.index("close")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Architecture knobs; each model reads the ones it has."""

    units: int = 50
    dropout: float = 0.2
    cnn_filters: int = 8
    cnn_dropout: float = 0.5
    cnn_activation: str = "relu"
    #: The study put LeakyReLU (LSTM) or ReLU (GRU) on the output; with log-return targets a
    #: linear output is the honest choice, so that is the default here.
    output_activation: str = "linear"
    #: Quantile levels every model forecasts (ascending; the outermost two bound the central
    #: interval whose coverage is reported and checked at promotion).
    quantiles: tuple[float, ...] = DEFAULT_LEVELS
    #: Step size of the online adaptive conformal calibration (0 turns it off).
    aci_gamma: float = 0.002

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantiles", check_levels(self.quantiles))
        if not 0 <= self.aci_gamma < 1:
            raise ConfigError(f"model.aci_gamma = {self.aci_gamma}: must be in [0, 1)")
        _check_positive("model", "units", self.units)
        _check_positive("model", "cnn_filters", self.cnn_filters)
        for key, value in (("dropout", self.dropout), ("cnn_dropout", self.cnn_dropout)):
            if not 0 <= value < 1:
                raise ConfigError(f"model.{key} = {value}: must be in [0, 1)")
        _check_choice("model", "cnn_activation", self.cnn_activation, ACTIVATIONS)
        _check_choice("model", "output_activation", self.output_activation, ACTIVATIONS)


@dataclass(frozen=True, slots=True)
class TrainParams:
    """How a model is fitted."""

    epochs: int = 100
    batch_size: int = 512
    #: Adam's step size at batch 64; the rate used is scaled by batch_size / 64 (the linear
    #: scaling rule), so a larger batch, with fewer steps per epoch, keeps the per-epoch progress
    #: (bench/train_throughput.py compares validation losses at equal epochs).
    learning_rate: float = 1e-3
    #: Training batches run per compiled call (fewer Python round trips per epoch).
    steps_per_execution: int = 8
    #: Early stopping patience in epochs on validation loss (best epoch restored).
    patience: int = 10
    seed: int = 42
    #: Use every `stride`-th training window (1 = all); a cheap way to cap epoch cost.
    stride: int = 1
    #: Mixed float16 compute (GPU only; ignored on CPU).
    mixed_precision: bool = False

    def __post_init__(self) -> None:
        _check_positive("train", "epochs", self.epochs)
        _check_positive("train", "batch_size", self.batch_size)
        _check_positive("train", "learning_rate", self.learning_rate)
        _check_positive("train", "patience", self.patience, allow_zero=True)
        _check_positive("train", "stride", self.stride)
        _check_positive("train", "steps_per_execution", self.steps_per_execution)

    @property
    def scaled_learning_rate(self) -> float:
        return self.learning_rate * self.batch_size / REFERENCE_BATCH
