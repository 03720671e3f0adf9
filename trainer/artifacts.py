"""Model artifacts: a directory with the model's files and `manifest.json`.

The manifest says everything needed to trust and use the files: architecture, parameters,
features, window, horizon, scaler, training range, metrics, library versions, a fingerprint
of the training data and a sha256 of every file. Loading checks all of it; anything missing,
damaged or not what the caller expects is an `ArtifactError` naming the artifact.
Writes go to a temporary sibling directory renamed into place, so a reader never sees half
an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from db.errors import ArtifactError
from trainer.features import Featurizer
from trainer.models import ARCHS, Forecaster, build_model, params_dict
from trainer.params import DataParams, ModelParams

MANIFEST = "manifest.json"
FORMAT = "barcast-model/2"  # 2: quantile outputs, point shrinkage and residual spread
STATE = "forecaster.npz"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("numpy", "keras", "tensorflow", "jax", "torch", "scikit-learn", "h5py"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    versions["keras_backend"] = os.environ.get("KERAS_BACKEND", "tensorflow")
    return versions


def data_fingerprint(times: np.ndarray, values: np.ndarray) -> str:
    """sha256 over bar times and values: same training data ⇔ same fingerprint."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(times, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return h.hexdigest()


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, datetimes as ISO text, NaN/inf as null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def save_artifact(model: Forecaster, directory: str | Path) -> Path:
    """Write `model` into `directory` (replaced if it exists). Returns the directory."""
    directory = Path(directory)
    if not model.fitted:
        raise ArtifactError(f"{directory}: refusing to save an unfitted {model.arch} model")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.savez(tmp / STATE, **model.state_arrays())  # type: ignore[arg-type]
        model._write(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT,
            "arch": model.arch,
            **params_dict(model),
            "features": list(model.features),
            "window": model.window,
            "horizon": model.horizon,
            "target": model.data.target,
            "quantiles": list(model.levels),
            "featurizer": model.featurizer.to_dict() if model.featurizer else None,
            "created_at": datetime.now(UTC).isoformat(),
            "libraries": library_versions(),
            "files": files,
            **_jsonable(model.meta),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False))
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: model artifact directory not found")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{directory}: no {MANIFEST}; not a barcast model artifact") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{path}: format {got!r}, expected {FORMAT!r}")
    return manifest


def load_artifact(
    directory: str | Path,
    *,
    window: int | None = None,
    horizon: int | None = None,
    features: tuple[str, ...] | None = None,
) -> Forecaster:
    """Load and verify an artifact; `window`/`horizon`/`features`, when given, must match it."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    arch = manifest.get("arch")
    if arch not in ARCHS:
        raise ArtifactError(f"{directory}: unknown architecture {arch!r} in manifest")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{directory}: manifest lists no files")
    for name, digest in files.items():
        p = directory / name
        if not p.is_file():
            raise ArtifactError(f"{directory}: file {name} listed in the manifest is missing")
        if _sha256(p) != digest:
            raise ArtifactError(f"{directory}: file {name} is corrupt (sha256 differs from the manifest)")
    try:
        d = dict(manifest["data"])
        d["features"] = tuple(d["features"])
        d["inputs"] = tuple(d.get("inputs", ()))  # artifacts before derived inputs had none
        data = DataParams(**d)
        params = ModelParams(**manifest["model"])
    except Exception as e:  # wrong keys, wrong types, values our params refuse
        raise ArtifactError(f"{directory}: manifest parameters are invalid: {e}") from None
    wants = {
        "window": (window, data.window),
        "horizon": (horizon, data.horizon),
        "features": (tuple(features) if features else None, data.features),
    }
    for key, (want, have) in wants.items():
        if want is not None and want != have:
            raise ArtifactError(f"{directory}: artifact has {key} {have!r}, expected {want!r}")
    model = build_model(arch, params, data)
    if manifest.get("featurizer") is not None:
        model.featurizer = Featurizer.from_dict(manifest["featurizer"])
        f = model.featurizer
        if (f.window, f.horizon, f.features, f.base_features, f.derived) != (
            data.window,
            data.horizon,
            model.features,
            data.features,
            data.inputs,
        ):
            raise ArtifactError(f"{directory}: scaler description does not match window/horizon/features")
    elif model.uses_featurizer:
        raise ArtifactError(f"{directory}: {arch} artifact has no scaler")
    try:
        with np.load(directory / STATE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{directory / STATE}: cannot be read: {e}") from None
    model.load_state_arrays(arrays, str(directory / STATE))
    model._read(directory)
    model.meta = {k: manifest[k] for k in ("series", "training", "metrics", "fit", "train") if k in manifest}
    return model
