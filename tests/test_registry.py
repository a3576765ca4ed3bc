"""The registry hand-over: a migrated model logged as an MLflow model of its run and registered under its
spec name, alias `migrated` on the newest version. Real stages on real TF1 checkpoints, a real MLflow
store (the `catalogue` fixture's SQLite file), the model reloaded through the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import REPO, restore_stages, spec_of
from mlflow.entities import LoggedModelStatus
from mlflow.models import get_model_info
from mlflow.tracking import MlflowClient

import ferry
from ferry.cache import fingerprint
from ferry.review.registry import ALIAS, MODEL_NAME, load_migrated, register_migrated
from ferry.shards import load_shard
from ferry.sources import checkpoint_files
from ferry.tf1.session import run_tf1
from tasks.export import export_savedmodel

pytestmark = pytest.mark.tf1


def migrate(catalogue: Path, name: str, work: Path):
    """The stages of a passing model, as plain functions: the spec, its model info and its export."""
    spec = spec_of(catalogue, name)
    info, restored = restore_stages(spec, work)
    exported = export_savedmodel(spec, info, restored, spec.shard_paths()[0])
    return spec, info, Path(exported["path"])


def model_run(name: str) -> tuple[MlflowClient, str]:
    """A client on the fixture's store and a new run of `name` in an experiment whose artifacts stay
    beside the store."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name("ferry-registry")
    artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    experiment = found.experiment_id if found else client.create_experiment("ferry-registry", artifacts)
    return client, client.create_run(experiment, run_name=name).info.run_id


def hand_over(client: MlflowClient, run_id: str, spec, info, savedmodel: Path):
    """What the catalogue flow passes once a model passed."""
    prefix = spec.source.checkpoint_prefix
    tags = {"checkpoint.sha256": fingerprint(checkpoint_files(prefix)[-1]), "verdict": "passed",
            "ferry.version": ferry.__version__, "source.meta": str(spec.source.meta)}
    example = load_shard(spec, spec.shard_paths()[0])
    return register_migrated(client, run_id, spec.name, savedmodel, info["inputs"],
                             list(spec.source.outputs), example, tags), tags


def logged_model(client: MlflowClient, run_id: str):
    [output] = client.get_run(run_id).outputs.model_outputs
    return client.get_logged_model(output.model_id)


def assert_reproduces_tf1(spec, predicted: dict[str, np.ndarray], arrays: dict[str, np.ndarray]) -> None:
    want = run_tf1(spec, arrays, spec.verify.batch_size, "/CPU:0")
    assert sorted(predicted) == sorted(want) == sorted(spec.source.outputs)
    for name in want:
        tol = spec.verify.tolerance_for(name)
        np.testing.assert_allclose(predicted[name], want[name], atol=tol.atol, rtol=tol.rtol)


def test_passed_model_is_registered_reloaded_and_reregistered(catalogue, tmp_path):
    spec, info, savedmodel = migrate(catalogue, "mlp", tmp_path / "work")
    client, run_id = model_run("mlp")

    version, tags = hand_over(client, run_id, spec, info, savedmodel)
    # (MLflow 3.17's SQL registry gives versions as int here and as str from search_model_versions)
    assert (version.name, int(version.version), version.aliases, version.run_id) == ("mlp", 1, [ALIAS], run_id)
    assert version.tags == tags and version.status == "READY"
    assert int(client.get_model_version_by_alias("mlp", ALIAS).version) == 1

    # The run's MLflow model `model` (MLflow 3: a logged model of the run, files under models/<id>/).
    logged = logged_model(client, run_id)
    assert (logged.name, logged.source_run_id, logged.status) == (MODEL_NAME, run_id, LoggedModelStatus.READY)
    assert version.source == logged.artifact_location
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": "mlp", "version": version.version}]
    assert {k: logged.tags[k] for k in tags} == tags
    model = get_model_info(f"runs:/{run_id}/{MODEL_NAME}")
    inputs = json.loads(model.signature.inputs.to_json())
    assert inputs == [{"name": "x", "type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 784]}}]
    assert model.signature.outputs.input_names() == ["probs"]
    assert model.saved_input_example_info["type"] == "ndarray"
    assert (model.run_id, model.model_id) == (run_id, logged.model_id)

    # What a reviewer does: the registry's model reproduces the TF1 graph on a verification shard.
    arrays = load_shard(spec, spec.shard_paths()[-1])
    loaded = mlflow.pyfunc.load_model(f"models:/mlp@{ALIAS}")
    assert_reproduces_tf1(spec, loaded.predict(arrays), arrays)
    single = loaded.predict(arrays["x"][:3])  # a single-input model also takes the bare array
    np.testing.assert_array_equal(single["probs"], loaded.predict({"x": arrays["x"][:3]})["probs"])

    # A rerun registers version 2 and moves the alias; version 1 stays.
    _, rerun_id = model_run("mlp")
    version2, _ = hand_over(client, rerun_id, spec, info, savedmodel)
    assert (int(version2.version), version2.aliases, version2.run_id) == (2, [ALIAS], rerun_id)
    assert int(client.get_model_version_by_alias("mlp", ALIAS).version) == 2
    assert client.get_model_version("mlp", "1").aliases == []
    assert sorted(int(v.version) for v in client.search_model_versions("name='mlp'")) == [1, 2]
    assert {k: int(v) for k, v in client.get_registered_model("mlp").aliases.items()} == {ALIAS: 2}


def test_integer_token_model_loads_through_load_migrated(catalogue, tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]
    spec, info, savedmodel = migrate(catalogue, "text_lstm", tmp_path / "work")
    client, run_id = model_run("text_lstm")
    version, _ = hand_over(client, run_id, spec, info, savedmodel)
    assert (version.name, int(version.version), version.aliases) == ("text_lstm", 1, [ALIAS])

    inputs = json.loads(get_model_info(f"runs:/{run_id}/{MODEL_NAME}").signature.inputs.to_json())
    assert inputs == [{"name": "tokens", "type": "tensor", "tensor-spec": {"dtype": "int32", "shape": [-1, 20]}}]
    arrays = load_shard(spec, spec.shard_paths()[-1])
    assert arrays["tokens"].dtype == np.int32
    assert_reproduces_tf1(spec, load_migrated("text_lstm", uri).predict(arrays), arrays)


REGISTER_WITHOUT_TF = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from mlflow.tracking import MlflowClient
from ferry.review.registry import example_from_shard, register_migrated

uri, jobs = sys.argv[1], json.loads(sys.argv[2])
client = MlflowClient(tracking_uri=uri)

def register(job):
    example = example_from_shard(Path(job["shard"]), job["inputs"])
    version = register_migrated(client, job["run_id"], job["name"], Path(job["savedmodel"]), job["inputs"],
                                job["outputs"], example, {"verdict": "passed"})
    return version.name, int(version.version), version.aliases

with ThreadPoolExecutor(len(jobs)) as pool:
    done = list(pool.map(register, jobs))
print(json.dumps({"done": done, "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
"""


def test_flow_process_registers_concurrently_without_importing_tensorflow(catalogue, tmp_path):
    """Two models registered at once from threads of a process that never imports TensorFlow."""
    uri = os.environ["MLFLOW_TRACKING_URI"]
    jobs = []
    for name in ("mlp", "text_lstm"):
        spec, info, savedmodel = migrate(catalogue, name, tmp_path / name)
        client, run_id = model_run(name)
        jobs.append({"name": name, "run_id": run_id, "savedmodel": str(savedmodel), "inputs": info["inputs"],
                     "outputs": list(spec.source.outputs), "shard": str(spec.shard_paths()[0])})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", REGISTER_WITHOUT_TF, uri, json.dumps(jobs)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["tensorflow"], result["keras"]) == (False, False)
    assert sorted(tuple(d) for d in result["done"]) == [("mlp", 1, [ALIAS]), ("text_lstm", 1, [ALIAS])]
    for job in jobs:
        assert logged_model(client, job["run_id"]).status == LoggedModelStatus.READY
        assert int(client.get_model_version_by_alias(job["name"], ALIAS).version) == 1
