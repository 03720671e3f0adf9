"""Pick the compute device before Keras is imported, and say which one serves.

`cpu` hides GPUs from every backend; `gpu` refuses to start without one; `auto` takes a GPU
when the Keras backend sees one. Detection asks the backend library itself (TensorFlow, JAX or
PyTorch): Keras 3 has no portable device query. Under `auto` the backend is not imported at
start: TensorFlow alone costs ~600 MB of memory and seconds of start-up, and the default models
(`har`, the baselines) are numpy. The backend then loads with the first network model served,
and `current` tells which device it took.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from db.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    backend: str
    device: str  # "cpu", "gpu", or "auto": not known yet (the backend is not loaded)
    gpus: tuple[str, ...]

    def describe(self) -> str:
        if self.device == "auto":
            return f"keras backend {self.backend} not loaded (no network model served yet; device picked then)"
        where = f"gpu ({', '.join(self.gpus)})" if self.device == "gpu" else "cpu"
        return f"keras backend {self.backend} on {where}"


def _backend() -> str:
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _gpus(backend: str) -> tuple[str, ...]:
    try:
        if backend == "tensorflow":
            tf = importlib.import_module("tensorflow")
            return tuple(d.name for d in tf.config.list_physical_devices("GPU"))
        if backend == "jax":
            jax = importlib.import_module("jax")
            return tuple(str(d) for d in jax.devices() if d.platform == "gpu")
        if backend == "torch":
            torch = importlib.import_module("torch")
            return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a backend that cannot even initialise has no usable GPU
        return ()
    return ()


def select_device(wanted: str) -> DeviceInfo:
    """Configure the process for `wanted` ("auto", "cpu", "gpu"); call before importing keras."""
    backend = _backend()
    if wanted == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        return DeviceInfo(backend, "cpu", ())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if wanted == "auto" and not _loaded(backend):
        return DeviceInfo(backend, "auto", ())
    gpus = _gpus(backend)
    if wanted == "gpu" and not gpus:
        raise ConfigError(f"forecast.device = 'gpu' but the {backend} backend sees no GPU")
    return DeviceInfo(backend, "gpu" if gpus else "cpu", gpus)


def current(info: DeviceInfo) -> DeviceInfo:
    """`info`, or (under `auto`) the device the backend took once a network model loaded it."""
    if info.device == "auto" and _loaded(info.backend):
        return select_device("auto")
    return info


def _loaded(backend: str) -> bool:
    return {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend) in sys.modules
