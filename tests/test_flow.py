"""The catalogue flow end to end: a real Prefect run (test harness), a real MLflow store, real TF1 models."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import artifact_paths
from mlflow.tracking import MlflowClient

from ferry.cli import main
from ferry.review.registry import load_migrated
from ferry.shards import load_shard
from ferry.spec import load_catalogue
from ferry.stages import STAGE_NAMES
from ferry.tf1.formats import READERS
from ferry.tf1.session import run_tf1
from flows.migrate import CatalogueFailed, migrate_catalogue
from tasks.export import call_savedmodel

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]



def runs_of(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    return parents, children


# The example catalogue: every model and its outputs; the last three are a TF1 Estimator model_dir, a frozen
# GraphDef and a TF1 SavedModel (served under its signature's keys), the others .meta graphs + checkpoints;
# mnist_cnn_keys and text_lstm_tfrecord verify from an .npz with foreign keys and from a TFRecord of tf.Examples,
# example_dnn (a TF1 SavedModel that parses serialized tf.Examples itself) from TFRecord files of them.
MODELS = {"estimator_dnn": ("predictions",), "example_dnn": ("probs",), "frozen_cnn": ("probs",),
          "gru_seq": ("scores",), "linear": ("y",), "mlp": ("probs",), "mnist_cnn": ("probs",),
          "mnist_cnn_keys": ("probs",), "resnet_bn": ("probs",), "savedmodel_mlp": ("classes", "scores"),
          "text_lstm": ("probs",), "text_lstm_tfrecord": ("probs",), "transformer": ("probs",)}
# The verification shards, as the runs' dataset inputs: four .npz each, but for the two other data layouts.
DATASETS = {"mnist_cnn_keys": [f"batch-00{i}" for i in range(2)],
            "text_lstm_tfrecord": [f"tokens-{i}-{i + 32}" for i in (0, 32, 64)]}


def test_catalogue_migrates_every_example_with_full_mlflow_record(catalogue):
    rows = migrate_catalogue(str(catalogue))
    assert [(r["model"], r["status"], r["coverage"]) for r in rows] == [(m, "passed", 1.0) for m in MODELS]
    assert all(r["worst_abs_err"] <= 1e-5 and r["worst_rel_err"] <= 1e-5 for r in rows)

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    [parent], children = runs_of(client, "ferry-examples")
    assert parent.info.run_name.startswith("catalogue ") and parent.data.tags["status"] == "passed"
    assert {"summary.json", "summary.txt"} <= artifact_paths(client, parent.info.run_id)
    assert parent.data.metrics["models.passed"] == parent.data.metrics["models.total"] == len(MODELS)
    assert sorted(children) == list(MODELS)

    for name, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == "passed" and run.data.tags["failed_stage"] == ""
        assert run.info.status == "FINISHED"
        metrics = run.data.metrics
        assert metrics["coverage.model_weights"] == 1.0
        assert metrics["coverage.checkpoint_keys"] == 1.0
        if name != "frozen_cnn":  # a frozen graph holds no optimizer state: nothing to skip
            assert metrics["coverage.checkpoint_keys_skipped"] > 0  # optimizer slots and global_step
        assert all(metrics[f"duration.{stage}"] > 0 for stage in STAGE_NAMES)
        assert run.data.params["name"] == name
        assert run.data.params["verify.tolerance.atol"] == "1e-05"
        artifacts = artifact_paths(client, run.info.run_id)
        assert {f"spec/{name}.yaml", "inventory.json", "name_map.json", "parity.json",
                "savedmodel/saved_model.pb"} <= artifacts
        # For the reviewer: plots, links to Prefect and to the exact inputs, a description, the shards.
        for out in MODELS[name]:
            assert {"plots/coverage.png", f"plots/parity-{out}-abs-err.png",
                    f"plots/parity-{out}-scatter.png"} <= artifacts
        tags = run.data.tags
        assert tags["prefect.flow_run_id"] and tags["prefect.task_run_id"] and tags["prefect.task_run.export"]
        assert tags["spec.sha256"] == hashlib.sha256(open(tags["spec.file"], "rb").read()).hexdigest()
        assert len(tags["checkpoint.sha256"]) == 64 and tags["ferry.build"].startswith("0.1.0+")
        note = tags["mlflow.note.content"]
        assert note.startswith(f"**{name}**") and "Verdict: **passed**" in note
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == [
            f"{name}-{shard}" for shard in DATASETS.get(name, [f"shard-00{i}" for i in range(4)])]
        # ... and the hand-over: registered under the spec name, alias `migrated`, tagged with the checkpoint.
        version = client.get_model_version_by_alias(name, "migrated")
        assert version.tags["checkpoint.sha256"] == tags["checkpoint.sha256"] and version.tags["verdict"] == "passed"
        assert tags["registry.version"] == f"{name}/{version.version}"

    output = MODELS
    cnn = children["mnist_cnn"]
    history = client.get_metric_history(cnn.info.run_id, "parity.probs.max_abs_err")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # one value per shard, shard index as step
    assert all(m.value <= 1e-5 for m in history)
    for name, outs in output.items():
        for out in outs:
            assert children[name].data.metrics[f"parity.{out}.max_abs_err"] <= 1e-5
            assert children[name].data.metrics[f"parity.{out}.norm_rel_err"] <= 1e-5
    assert cnn.data.metrics["parity.probs.argmax_agreement"] == 1.0

    # The exported SavedModels reload, keep the TF1 names, and reproduce the TF1 graph; so does the
    # registered model a consumer loads by name.
    cat = load_catalogue(catalogue)
    registered = load_migrated("mlp", os.environ["MLFLOW_TRACKING_URI"])
    arrays = load_shard(cat.specs["mlp"], cat.specs["mlp"].shard_paths()[0])
    np.testing.assert_allclose(registered.predict(arrays)["probs"],
                               run_tf1(cat.specs["mlp"], arrays, 64, "/CPU:0")["probs"], atol=1e-5, rtol=1e-5)
    for name, spec in cat.specs.items():
        if not spec.source.inputs:  # the artifact's own signature (a TF1 SavedModel's), as inspect resolves it
            spec = spec.with_signature(*READERS[spec.source.format].signature(spec.source))
        arrays = load_shard(spec, spec.shards()[-1])
        # each `serving_default` takes what the TF1 model took: example_dnn's the serialized records themselves
        got = call_savedmodel(spec, spec.export.dir, arrays)
        want = run_tf1(spec, arrays, 64, "/CPU:0")
        assert sorted(got) == list(output[name])  # the serving names: a SavedModel's signature keys too
        for out in output[name]:
            np.testing.assert_allclose(got[out], want[out], atol=1e-5, rtol=1e-5)
    assert not [p for p in (catalogue.parent.parent / "exports").iterdir() if p.name.startswith(".")]
    # each weight is written once (6 for the CNN: two convs and a dense, kernel + bias each)
    saved = [k for k, _ in tf.train.list_variables(str(cat.specs["mnist_cnn"].export.dir / "variables" / "variables"))
             if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(saved) == 6


def test_one_failing_model_does_not_stop_the_others(catalogue):
    cnn = catalogue.parent / "models" / "mnist_cnn.yaml"
    cnn.write_text(cnn.read_text().replace(r"to: '\1/\3'", r"to: 'conv/\3'"))  # a broken name map
    broken = catalogue.parent / "models" / "broken.yaml"
    broken.write_text("name: broken\nsource: {meta: nowhere.meta}\n")

    with pytest.raises(CatalogueFailed) as info:
        migrate_catalogue(str(catalogue), only=["linear", "mlp", "mnist_cnn", "broken"])
    assert str(info.value) == "2 of 4 models failed: broken at spec, mnist_cnn at restore"
    rows = {r["model"]: r for r in info.value.rows}
    assert rows["linear"]["status"] == rows["mlp"]["status"] == "passed"
    assert "target 'conv/kernel' is not a model weight" in rows["mnist_cnn"]["error"]
    assert "broken.yaml: source.inputs: Field required" in rows["broken"]["error"]

    exports = catalogue.parent.parent / "exports"
    assert sorted(p.name for p in exports.iterdir()) == ["linear", "mlp"]  # nothing exported for failures

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    [parent], children = runs_of(client, "ferry-examples")
    assert parent.data.tags["status"] == "failed" and parent.info.status == "FAILED"
    failed = children["mnist_cnn"]
    assert (failed.data.tags["status"], failed.data.tags["failed_stage"]) == ("failed", "restore")
    assert failed.data.metrics["coverage.model_weights"] == 0.0
    assert "name_map.json" in artifact_paths(client, failed.info.run_id)  # the report explains the failure
    assert children["broken"].data.tags["failed_stage"] == "spec"
    assert "Verdict: **failed at restore**" in failed.data.tags["mlflow.note.content"]
    assert "plots/coverage.png" in artifact_paths(client, failed.info.run_id)  # what went unmapped, drawn
    registered = {m.name for m in client.search_registered_models()}
    assert registered == {"linear", "mlp"}  # a failing model is never registered


def test_summary_is_a_prefect_artifact(catalogue):
    from prefect.client.orchestration import get_client

    migrate_catalogue(str(catalogue), only=["linear", "mlp"])
    # Read through the REST API: with fastapi 0.154, prefect 3.8.8's client sends nulls that its server
    # rejects (422) for the optional fields of /artifacts/filter; /artifacts/{key}/latest works.
    with get_client(sync_client=True) as client:
        artifact = client.request("GET", "/artifacts/ferry-summary-catalogue/latest").json()
    assert artifact["type"] == "table"
    table = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    assert [(r["model"], r["status"]) for r in table] == [("linear", "passed"), ("mlp", "passed")]


def test_cli_run_only_one_model(catalogue, capsys):
    assert main(["run", str(catalogue), "--only", "linear"]) == 0
    assert "ferry: 1 of 1 models migrated" in capsys.readouterr().out
    assert (catalogue.parent.parent / "exports" / "linear" / "saved_model.pb").exists()
    assert not (catalogue.parent.parent / "exports" / "mlp").exists()
