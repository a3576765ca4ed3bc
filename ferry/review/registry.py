"""Hand-over to the MLflow model registry: a migrated SavedModel as an MLflow (pyfunc) model, registered.

A model that **passed** migration (every stage, parity on every shard, export re-check) is logged
as an MLflow model of its model run and registered under its spec name; the registered model's
alias `migrated` points at the newest such version. Reviewers then load it as

    ferry.registry.load_migrated("mlp", "sqlite:///…/mlflow.db")      # or, equivalently,
    mlflow.pyfunc.load_model("models:/mlp@migrated")                  # MLFLOW_TRACKING_URI set

and call `.predict({"x": array})`, which returns the SavedModel's `serving_default` outputs by
their TF1 serving names. The MLflow model's artifacts hold the SavedModel (`artifacts/<export dir
name>/`) and, for a ferry export, the Keras 3 model beside it (`artifacts/<name>.keras`, artifact
`keras`), to load with `keras.saving.load_model` and train further.

`register_migrated` is never called for a model that failed: the caller (the catalogue flow)
decides, after the model's stages passed. Nothing here checks a verdict; it only records the
`verdict` tag it is given.

How it is logged (MLflow 3): a *LoggedModel* named `model`, whose source run is the model run and
which is listed among that run's outputs. MLflow 3 keeps a logged model's files under the
experiment's `models/<model_id>/artifacts/`, not under the run's artifacts (so the run has no
`model/` artifact folder; `runs:/<run_id>/model` still resolves, through the run's outputs). The
model version's source is that artifact location.

Everything goes through the given `MlflowClient` with explicit ids — no fluent active run, no
process-wide tracking URI — so several threads may register models at once. TensorFlow is imported
only inside the pyfunc model's `load_context`/`predict` (where it is loaded), never by the process
that logs and registers; pip requirements are written explicitly (pinned from the installed
versions), so MLflow neither imports the model to infer them nor validates the input example by
loading it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import AnyType
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from ferry.export_dir import FEATURES_SIGNATURE, SIGNATURE, keras_file, savedmodel_entries

ALIAS = "migrated"  # the registered model's alias for the newest migrated version
MODEL_NAME = "model"  # the logged model's name in the run (MLflow 2's `artifact_path`)
EXAMPLE_ROWS = 5  # rows of the verification shard kept as the input example
REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas", "tensorflow")  # what loading the model needs
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # spec names (ferry.spec.ModelSpec.name)

# Saving pickles `SavedModelPyfunc` by value (so loading needs no ferry installed); cloudpickle's
# by-value registry is process-wide, hence one save at a time.
_SAVE_LOCK = threading.Lock()


class SavedModelPyfunc(mlflow.pyfunc.PythonModel):
    """The SavedModel's `serving_default` signature as a pyfunc model (its `features` signature, the parsed
    features, for a model served on serialized tf.Examples).

    `predict` takes a dict of arrays keyed by the TF1 serving input names (for a single-input model
    also the bare array; or a pandas DataFrame with one column per input name, each cell one row's
    array) and returns a dict of numpy arrays keyed by the TF1 serving output names. MLflow checks the
    input against the signature first, dtype included: a float64 array for a float32 input is refused.
    """

    # No type-hint based input validation (MLflow's wrapper, and its "add type hints" warning): the
    # signature's tensor specs validate inputs.
    _skip_type_hint_validation = True

    def load_context(self, context):
        # As ferry does before TensorFlow loads (ferry/__init__.py): the kernels parity was measured
        # with, unless the user chose otherwise. No effect once TensorFlow is imported.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        import tensorflow as tf

        self._module = tf.saved_model.load(context.artifacts["savedmodel"])
        signatures = self._module.signatures  # the parsed features for a model served on serialized tf.Examples
        self._signature = signatures[FEATURES_SIGNATURE] if FEATURES_SIGNATURE in signatures else signatures[SIGNATURE]
        _, kwargs = self._signature.structured_input_signature
        self._inputs = {name: spec.dtype.as_numpy_dtype for name, spec in kwargs.items()}

    def predict(self, context, model_input, params=None):
        import tensorflow as tf

        feeds = _feeds(model_input, self._inputs)
        outputs = self._signature(**{name: tf.constant(value) for name, value in feeds.items()})
        return {name: tensor.numpy() for name, tensor in outputs.items()}


def _feeds(model_input: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The serving signature's arguments from a dict of arrays, a bare array or a DataFrame."""
    names = list(inputs)
    if isinstance(model_input, dict):
        missing = [name for name in names if name not in model_input]
        if missing:
            raise ValueError(f"model input has no array for {missing} (got {sorted(model_input)}; "
                             f"the model's inputs are {names})")
        return {name: np.asarray(model_input[name], dtype=inputs[name]) for name in names}
    if hasattr(model_input, "to_numpy") and hasattr(model_input, "columns"):  # pandas DataFrame
        if len(names) == 1 and names[0] not in model_input.columns:
            return {names[0]: model_input.to_numpy(dtype=inputs[names[0]])}
        return {name: np.asarray(model_input[name].tolist(), dtype=inputs[name]) for name in names}
    if len(names) == 1:
        return {names[0]: np.asarray(model_input, dtype=inputs[names[0]])}
    raise ValueError(f"a model with several inputs {names} takes a dict of arrays by input name, "
                     f"not {type(model_input).__name__}")


def signature_for(inputs: dict[str, dict[str, Any]], outputs: list[str] | dict[str, dict[str, Any]]) -> ModelSignature:
    """Tensor specs by TF1 serving name, batch dimension -1 (unknown dimensions too).

    `inputs`: name -> {"shape": dims without batch (None allowed), "dtype": "float32", "int32", …}, as
    the reconstruct stage records them. `outputs`: the output names (their dtypes and shapes are not
    known without loading the model: the output schema then lists the names with type `any`), or
    name -> {"shape", "dtype"} like `inputs` when known.
    """
    def tensor(name: str, sig: dict[str, Any]) -> TensorSpec:
        shape = (-1, *(-1 if d is None else int(d) for d in sig["shape"]))
        return TensorSpec(np.dtype(sig["dtype"]), shape, name)

    input_schema = Schema([tensor(name, sig) for name, sig in inputs.items()])
    if isinstance(outputs, dict) and all(isinstance(v, dict) for v in outputs.values()):
        output_schema = Schema([tensor(name, sig) for name, sig in outputs.items()])
    else:
        output_schema = Schema([ColSpec(AnyType(), name) for name in outputs])
    return ModelSignature(inputs=input_schema, outputs=output_schema)


def pip_requirements() -> list[str]:
    """What loading the model needs, pinned to the versions installed here (read from package
    metadata: nothing is imported)."""
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def example_from_shard(shard: Path, inputs: list[str] | dict[str, Any], rows: int = EXAMPLE_ROWS,
                       data: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The first `rows` rows of a verification shard's arrays for `inputs`; `data` ({format, options} of
    `ferry.data`) reads a shard of another format than `.npz` keyed by serving name."""
    if data is not None:
        from ferry.data import peek_with

        return peek_with(data["format"], data["options"], shard, list(inputs), rows)
    with np.load(shard) as data:
        missing = [name for name in inputs if name not in data.files]
        if missing:
            raise ValueError(f"{shard} has no array for inputs {missing} (it holds {data.files})")
        return {name: data[name][:rows] for name in inputs}


def _artifacts(export: Path, staging: Path) -> dict[str, str]:
    """The MLflow model's artifacts: `savedmodel` (the SavedModel's files alone) and, for a ferry export,
    `keras` (its `<name>.keras`); the export's files are linked into `staging` where possible, not copied."""
    keras = keras_file(export)
    if keras is None:
        return {"savedmodel": str(export.resolve())}
    view = staging / export.name
    view.mkdir(parents=True)
    for entry in savedmodel_entries(export):
        if entry.is_dir():
            shutil.copytree(entry, view / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(view / entry.name))
    return {"savedmodel": str(view), "keras": str(keras.resolve())}


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(source, target)


def _save_pyfunc(path: Path, artifacts: dict[str, str], signature: ModelSignature,
                 example: dict[str, np.ndarray] | None, mlflow_model: Model) -> None:
    """Write the MLflow model folder at `path` (local only: nothing is logged yet)."""
    module = sys.modules[__name__]
    with _SAVE_LOCK:
        cloudpickle.register_pickle_by_value(module)
        _PYFUNC_LOGGER.addFilter(_quiet_pickle_warning)
        try:
            mlflow.pyfunc.save_model(
                str(path), python_model=SavedModelPyfunc(), artifacts=artifacts,
                signature=signature, input_example=example, pip_requirements=pip_requirements(),
                mlflow_model=mlflow_model)
        finally:
            _PYFUNC_LOGGER.removeFilter(_quiet_pickle_warning)
            cloudpickle.unregister_pickle_by_value(module)


_PYFUNC_LOGGER = logging.getLogger("mlflow.pyfunc")


def _quiet_pickle_warning(record: logging.LogRecord) -> bool:
    """Drop MLflow's advice to log models from code instead of pickling them, written for every model:
    ferry's class is pickled on purpose (by value: loading it needs no ferry)."""
    return "serialized using CloudPickle" not in record.getMessage()


def register_migrated(client: MlflowClient, run_id: str, name: str, savedmodel: Path, inputs: dict[str, dict],
                      outputs: list[str] | dict[str, dict], example: dict[str, np.ndarray],
                      tags: dict[str, str]) -> ModelVersion:
    """Log the migrated SavedModel as MLflow model `model` of run `run_id`, register it as a new version of
    registered model `name`, tag the version and point alias `migrated` at it.

    Call it only for a model that passed migration (the caller decides; nothing here re-checks).

    - `client`: the client of the store holding `run_id` (its registry is the one registered in).
    - `run_id`: the model's MLflow run, in the store (not an offline run kept in a journal: skip or
      defer the hand-over then); it may be running or finished, its status is not changed.
    - `name`: the registered model's name: the spec name.
    - `savedmodel`: the exported SavedModel folder (copied into the MLflow model as artifact `savedmodel`);
      for a ferry export, its `<name>.keras` becomes artifact `keras` beside it.
    - `inputs`: serving input name -> {"shape": dims without batch, None allowed; "dtype": "float32", …}
      (the reconstruct stage's `info["inputs"]`).
    - `outputs`: serving output names in order (`list(spec.source.outputs)`), or name -> {"shape", "dtype"}.
    - `example`: arrays by serving input name, e.g. a verification shard (`example_from_shard`, which
      needs no TensorFlow); its first `EXAMPLE_ROWS` rows become the input example.
    - `tags`: the version's tags (e.g. `checkpoint.sha256`, `verdict`, `ferry.version`, `source.meta`);
      also set on the logged model.

    Every call makes a new version (a rerun included) and moves the alias to it. Returns the new
    model version, aliases included (its `version` is an int with MLflow 3.17's SQL store). Raises
    ValueError for a name the registry cannot take or a folder that is no SavedModel, MlflowException
    on store errors, and for an example that does not fit `inputs` (the logged model is then FAILED).
    """
    if not NAME_PATTERN.match(name):
        raise ValueError(f"registered model name {name!r} must match {NAME_PATTERN.pattern}")
    savedmodel = Path(savedmodel)
    if not (savedmodel / "saved_model.pb").is_file():
        raise ValueError(f"{savedmodel} is not a SavedModel folder (no saved_model.pb)")
    tags = {str(k): str(v) for k, v in tags.items()}
    # none when the shard holds no input of the model (serialized tf.Examples the graph parsed itself)
    example = {k: np.asarray(v)[:EXAMPLE_ROWS] for k, v in example.items() if k in inputs} or None
    signature = signature_for(inputs, outputs)

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=tags)
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-mlflow-model-") as tmp:
            local = Path(tmp) / MODEL_NAME
            _save_pyfunc(local, _artifacts(savedmodel, Path(tmp) / "export"), signature, example,
                         Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                               model_id=logged.model_id))
            client.log_model_artifacts(logged.model_id, str(local))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)

    try:
        client.create_registered_model(name, description="TF1 model migrated to a Keras 3 SavedModel by ferry")
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
    # The source is the logged model's artifact location, not `models:/<model_id>`: MLflow's SQL registry
    # store resolves a `models:/` source with a default `MlflowClient()` (the process-wide tracking URI),
    # not with this client's store.
    version = client.create_model_version(name, source=logged.artifact_location, run_id=run_id, tags=tags,
                                          model_id=logged.model_id)
    # What `mlflow.register_model` records: the logged model's page links to its registered version.
    client.set_logged_model_tags(logged.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
        [{"name": name, "version": version.version}])})
    client.set_registered_model_alias(name, ALIAS, version.version)
    return client.get_model_version(name, version.version)


def load_migrated(name: str, tracking_uri: str):
    """What a reviewer runs: the newest migrated version of `name` (alias `migrated`) as a pyfunc model,
    from the store at `tracking_uri` (e.g. `sqlite:///…/mlflow.db`, the one ferry logged to).

        model = load_migrated("mlp", "sqlite:///mlflow.db")
        model.predict({"x": batch})["probs"]          # dict of arrays by TF1 serving name

    The same as `mlflow.pyfunc.load_model("models:/NAME@migrated")` with `MLFLOW_TRACKING_URI` set to
    `tracking_uri`, without touching the process's tracking URI (MLflow resolves a `models:/` URI
    with the process-wide registry URI, whatever tracking URI it is given). Loading imports TensorFlow.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, ALIAS)
    location = client.get_model_version_download_uri(name, version.version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=tracking_uri)
    return mlflow.pyfunc.load_model(local)


__all__ = ["ALIAS", "MODEL_NAME", "SavedModelPyfunc", "example_from_shard", "load_migrated", "pip_requirements",
           "register_migrated", "signature_for"]
