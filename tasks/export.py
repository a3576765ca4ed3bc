"""Stage 5: hand the model over in one folder, `export.dir`: a SavedModel keeping the TF1 serving names,
the Keras 3 model as `<name>.keras`, and the marker `ferry-export.json`; both models are reloaded and
re-checked before the folder is moved into place atomically."""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import ferry
from ferry.cache import fingerprint
from ferry.export_dir import check_replaceable, make_temp_folder, remove_stale_temp_folders, write_marker
from ferry.files import replace_folder
from ferry.keras3.layers import portability
from ferry.keras3.run import load_keras, run_keras
from ferry.parity import compare
from ferry.shards import batches, stream_shard
from ferry.spec import ModelSpec
from ferry.stages import Exported, Reconstructed, Restored
from ferry.tf1.session import keras_inputs

SIGNATURE = "serving_default"


def serving_function(spec: ModelSpec, model: keras.Model, inputs: dict[str, dict[str, Any]]):
    """`model`'s serving function, traced once: it takes the TF1 input names and returns the TF1 output names."""
    specs = [tf.TensorSpec([None, *sig["shape"]], sig["dtype"], name=name) for name, sig in inputs.items()]
    names = list(spec.source.outputs)

    def serve(*args):
        out = model(args[0] if len(args) == 1 else list(args), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return {name: tensor for name, tensor in zip(names, out)}

    return tf.function(serve, input_signature=specs).get_concrete_function()


def write_savedmodel(model: keras.Model, serve, path: Path) -> None:
    """Write `model`'s variables and its traced `serve` function as a SavedModel with one serving signature.
    (A plain tf.Module tracking the backend variables once: keras.export.ExportArchive also tracks the Keras
    wrappers and writes every variable twice. `serve` is a concrete function so that saving does not trace
    the model again.)"""
    module = tf.Module()
    module.variables_ = [w.value for w in model.weights]
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: serve})


def run_serving(spec: ModelSpec, serve, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A serving function's outputs over whole arrays, `verify.batch_size` rows at a time."""
    parts = [{k: v.numpy() for k, v in serve(*[tf.constant(batch[k]) for k in spec.source.inputs]).items()}
             for batch in batches(arrays, spec.verify.batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def call_savedmodel(spec: ModelSpec, path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reload a SavedModel and call its serving signature by the TF1 names, batched as `run_serving` is (so a
    time-major output lines up with the in-memory model's, batch for batch)."""
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    return run_serving(spec, lambda *args: signature(**dict(zip(spec.source.inputs, args))), arrays)


def save_and_reload_keras(spec: ModelSpec, model: keras.Model, path: Path) -> keras.Model:
    """Save `model` as a Keras 3 archive (architecture + weights) at `path` and load it back."""
    try:
        model.save(path)
        return keras.saving.load_model(path)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; the cause is in the message
        field = "architecture.factory" if spec.architecture != "auto" and spec.architecture.factory else "architecture"
        raise ValueError(f"{spec.spec_file}: {field}: the Keras model does not save and reload as {path.name}: "
                         f"{type(exc).__name__}: {exc}\nLayers of your own must be registered with "
                         "@keras.saving.register_keras_serializable() and return every constructor argument "
                         "from get_config().") from None


def recheck(spec: ModelSpec, what: str, got: dict[str, np.ndarray], expected: dict[str, np.ndarray],
            shard: Path) -> dict[str, dict[str, Any]]:
    """Parity of a reloaded hand-over against the in-memory Keras model (the spec's tolerances); raise if off."""
    if sorted(got) != sorted(expected):
        raise ValueError(f"{spec.spec_file}: source.outputs: the reloaded {what} has outputs {sorted(got)}, "
                         f"the spec {sorted(expected)}")
    checks = {name: compare(got[name], expected[name], spec.verify.tolerance_for(name)) for name in expected}
    failed = {name: c for name, c in checks.items() if not c["passed"]}
    if failed:
        raise ValueError(f"{spec.spec_file}: export: the reloaded {what} differs from the Keras model on {shard} "
                         f"(verify.tolerance): {failed}; nothing was exported to {spec.export.dir}")
    return checks


def first_batch(spec: ModelSpec, shard: Path) -> dict[str, np.ndarray]:
    """The rows the hand-over is checked on: the shard's first batch (every weight takes part; verify has
    covered the data)."""
    with closing(stream_shard(spec, shard, spec.verify.batch_size)) as stream:
        return next(stream)


def export_savedmodel(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, shard: str | Path) -> Exported:
    """Write `<name>.keras` and the SavedModel to a temporary folder beside `export.dir`, check both on the
    first batch of `shard`, then move the folder into place (refused if `export.dir` holds anything but an
    earlier export of this model).

    One chain checks both hand-overs: the `.keras` is reloaded, the SavedModel is traced from the reloaded
    model, and the reloaded SavedModel must reproduce the in-memory model's outputs. When it does
    not, the reloaded `.keras` is run by itself to say which of the two is wrong."""
    dest = Path(spec.export.dir)
    check_replaceable(dest, spec.name, spec.spec_file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_folders(dest)
    model = load_keras(spec, reconstructed, restored["weights"])
    shard = Path(shard)
    batch = keras_inputs(spec, first_batch(spec, shard), str(shard), "/CPU:0")
    expected = run_keras(spec, model, batch, spec.verify.batch_size, "/CPU:0")
    keras_record = {"file": f"{spec.name}.keras", **portability(model)}
    tmp = make_temp_folder(dest)
    try:
        reloaded = save_and_reload_keras(spec, model, tmp / keras_record["file"])
        write_savedmodel(reloaded, serving_function(spec, reloaded, reconstructed["inputs"]), tmp)
        try:
            checks = recheck(spec, "SavedModel", call_savedmodel(spec, tmp, batch), expected, shard)
        except ValueError:  # which hand-over is wrong: the reloaded .keras run by itself, else the SavedModel
            recheck(spec, keras_record["file"], run_keras(spec, reloaded, batch, spec.verify.batch_size, "/CPU:0"),
                    expected, shard)
            raise
        write_marker(tmp, {"model": spec.name, "spec_file": str(spec.spec_file), "ferry_version": ferry.__version__,
                           "savedmodel": {"signature": SIGNATURE, "inputs": list(spec.source.inputs),
                                          "outputs": list(spec.source.outputs)},
                           "keras": keras_record})
        check_replaceable(dest, spec.name, spec.spec_file)  # again: something may have landed there meanwhile
        replace_folder(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"path": str(dest), "checked_on": str(shard), "outputs": checks,
            "keras": {**keras_record, "path": str(dest / keras_record["file"]), "outputs": checks},
            "files": {str(dest): fingerprint(dest)}}
