"""Stage 5: export a SavedModel keeping the TF1 serving names, re-check it, move it into place atomically."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ferry.cache import fingerprint
from ferry.parity import compare
from ferry.runtime import load_keras, load_shard, run_keras
from ferry.spec import ModelSpec

SIGNATURE = "serving_default"


def write_savedmodel(spec: ModelSpec, model: keras.Model, inputs: dict[str, dict[str, Any]], path: Path) -> None:
    """Write `model` with one serving signature: TF1 input names in, TF1 output names out."""
    specs = [tf.TensorSpec([None, *sig["shape"]], sig["dtype"], name=name) for name, sig in inputs.items()]
    names = list(spec.source.outputs)

    def serve(*args):
        out = model(args[0] if len(args) == 1 else list(args), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return {name: tensor for name, tensor in zip(names, out)}

    # A plain tf.Module tracking the backend variables once. (keras.export.ExportArchive also tracks
    # the Keras wrappers, so it writes every variable twice: a SavedModel twice the weights' size.)
    module = tf.Module()
    module.variables_ = [w.value for w in model.weights]
    module.serve = tf.function(serve, input_signature=specs)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: module.serve})


def call_savedmodel(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reload a SavedModel and call its serving signature by the TF1 names."""
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in arrays.items()}).items()}


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Replace `dest` by `tmp` with renames only, so `dest` is never half-written."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)


def export_savedmodel(spec: ModelSpec, model_info: dict[str, Any], weights: str, shard: Path) -> dict[str, Any]:
    """Export to a temporary folder beside the target, reload and check it on `shard`, then move it in."""
    dest = Path(spec.export.dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    model = load_keras(spec, model_info, weights)
    arrays = load_shard(spec, Path(shard))
    expected = run_keras(spec, model, arrays, spec.verify.batch_size, "/CPU:0")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write_savedmodel(spec, model, model_info["inputs"], tmp)
        got = call_savedmodel(tmp, arrays)
        if sorted(got) != sorted(expected):
            raise ValueError(f"SavedModel outputs {sorted(got)} != spec outputs {sorted(expected)}")
        checks = {name: compare(got[name], expected[name], spec.verify.tolerance_for(name)) for name in expected}
        failed = {name: c for name, c in checks.items() if not c["passed"]}
        if failed:
            raise ValueError(f"reloaded SavedModel differs from the Keras model on {shard}: {failed}")
        _move_into_place(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"path": str(dest), "checked_on": str(shard), "outputs": checks, "files": {str(dest): fingerprint(dest)}}
