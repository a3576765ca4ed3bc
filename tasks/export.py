"""Stage 5: hand the model over in one folder, `export.dir`: a SavedModel keeping the TF1 serving names,
the Keras 3 model as `<name>.keras`, and the marker `ferry-export.json`; both models are reloaded and
re-checked before the folder is moved into place atomically."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import ferry
from ferry.cache import fingerprint
from ferry.data import SERIALIZED
from ferry.export_dir import (
    FEATURES_SIGNATURE,
    SIGNATURE,
    check_replaceable,
    make_temp_folder,
    remove_stale_temp_folders,
    write_marker,
)
from ferry.files import replace_folder
from ferry.keras3.layers import portability
from ferry.keras3.run import load_keras, run_keras
from ferry.parity import compare
from ferry.shards import batches, stream_shard
from ferry.spec import ModelSpec
from ferry.stages import Exported, Reconstructed, Restored
from ferry.tf1.parsing import parse_function, serialized_input_name
from ferry.tf1.session import keras_inputs
from tasks import stage_logger


def carried_parsing(spec: ModelSpec) -> tuple[Any | None, str | None]:
    """For a graph served on serialized tf.Examples (`verify.tfrecord.serialized`): its own parse ops as a function
    for `serving_default` to run before the model, or None and why not (features the records alone cannot make:
    `serving_default` then takes the parsed features). (None, None) for any other graph."""
    if spec.verify.serialized is None:
        return None, None
    try:
        return parse_function(spec), None
    except ValueError as exc:
        return None, str(exc)


def serving_functions(spec: ModelSpec, model: keras.Model, inputs: dict[str, dict[str, Any]],
                      parse: Any | None = None) -> dict[str, Any]:
    """The SavedModel's signatures, each traced once (concrete functions), returning the TF1 output names:
    `serving_default` takes what the TF1 model took, its input names; with `parse` (`carried_parsing`), the
    serialized tf.Examples, parsed by the graph's own ops, and then `features` takes the parsed features (the
    Keras model's inputs)."""
    specs = [tf.TensorSpec([None, *sig["shape"]], sig["dtype"], name=name) for name, sig in inputs.items()]
    names = list(spec.source.outputs)

    def serve(*args):
        out = model(args[0] if len(args) == 1 else list(args), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return {name: tensor for name, tensor in zip(names, out)}

    features = tf.function(serve, input_signature=specs).get_concrete_function()
    if parse is None:
        return {SIGNATURE: features}

    def serve_examples(examples):
        parsed = [tf.ensure_shape(t, s.shape) for t, s in zip(parse(examples), specs)]
        return features(*parsed)

    examples = tf.TensorSpec([None], tf.string, name=serialized_input_name(spec))
    return {SIGNATURE: tf.function(serve_examples, input_signature=[examples]).get_concrete_function(),
            FEATURES_SIGNATURE: features}


def write_savedmodel(model: keras.Model, signatures: dict[str, Any], path: Path) -> None:
    """Write `model`'s variables and its traced `signatures` as a SavedModel.
    (A plain tf.Module tracking the backend variables once: keras.export.ExportArchive also tracks the Keras
    wrappers and writes every variable twice. The signatures are concrete functions so that saving does not
    trace the model again.)"""
    module = tf.Module()
    module.variables_ = [w.value for w in model.weights]
    module.signatures_ = dict(signatures)
    tf.saved_model.save(module, str(path), signatures=signatures)


def call_savedmodel(spec: ModelSpec, path: Path, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reload a SavedModel and call its `serving_default` by the TF1 names, `verify.batch_size` rows at a time
    (as the in-memory model is run: a time-major output lines up batch for batch). `arrays` holds the serving
    inputs, or the serialized tf.Examples (`{SERIALIZED: ...}`) for a signature that parses them."""
    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    if SERIALIZED in arrays:  # signature argument -> the array it takes
        (name,) = signature.structured_input_signature[1]
        keys = {name: SERIALIZED}
    else:
        keys = {name: name for name in spec.source.inputs}
    parts = [{k: v.numpy() for k, v in signature(**{n: tf.constant(batch[k]) for n, k in keys.items()}).items()}
             for batch in batches(arrays, spec.verify.batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def savedmodel_record(spec: ModelSpec, signatures: dict[str, Any], not_carried: str | None) -> dict[str, Any]:
    """The marker's `savedmodel`: the inputs of the signatures written (`serving_functions`), the outputs, and why
    the records are not parsed in it."""
    def inputs(function) -> list[str]:
        return [arg.name for arg in function.structured_input_signature[0]]

    record = {"signature": SIGNATURE, "inputs": inputs(signatures[SIGNATURE]), "outputs": list(spec.source.outputs)}
    if FEATURES_SIGNATURE in signatures:
        record.update(features_signature=FEATURES_SIGNATURE, features=inputs(signatures[FEATURES_SIGNATURE]))
    if not_carried:
        record["parsing_not_carried"] = not_carried
    return record


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
    records = first_batch(spec, shard)  # serving inputs, or serialized tf.Examples
    batch = keras_inputs(spec, records, str(shard), "/CPU:0")
    keras_record = {"file": f"{spec.name}.keras", **portability(model)}
    tmp = make_temp_folder(dest)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix=f"ferry-export-{spec.name}") as pool:
            # The in-memory outputs (kernels: no GIL held) are computed while the hand-overs are written.
            expecting = pool.submit(run_keras, spec, model, batch, spec.verify.batch_size, "/CPU:0")
            reloaded = save_and_reload_keras(spec, model, tmp / keras_record["file"])
            parse, not_carried = carried_parsing(spec)
            signatures = serving_functions(spec, reloaded, reconstructed["inputs"], parse)
            write_savedmodel(reloaded, signatures, tmp)
            expected = expecting.result()
        if not_carried:
            stage_logger().warning("%s: export: serving_default takes the parsed features, not the serialized "
                                   "tf.Examples: %s", spec.name, not_carried)
        try:
            checks = recheck(spec, "SavedModel", call_savedmodel(spec, tmp, records if parse else batch), expected,
                             shard)
        except ValueError:  # which hand-over is wrong: the reloaded .keras run by itself, else the SavedModel
            recheck(spec, keras_record["file"], run_keras(spec, reloaded, batch, spec.verify.batch_size, "/CPU:0"),
                    expected, shard)
            raise
        write_marker(tmp, {"model": spec.name, "spec_file": str(spec.spec_file), "ferry_version": ferry.__version__,
                           "savedmodel": savedmodel_record(spec, signatures, not_carried),
                           "keras": keras_record})
        check_replaceable(dest, spec.name, spec.spec_file)  # again: something may have landed there meanwhile
        replace_folder(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"path": str(dest), "checked_on": str(shard), "outputs": checks,
            "keras": {**keras_record, "path": str(dest / keras_record["file"]), "outputs": checks},
            "files": {str(dest): fingerprint(dest)}}
