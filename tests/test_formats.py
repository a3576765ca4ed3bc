"""Every format a TF1 fleet holds — a `.meta` graph with its checkpoint, a frozen GraphDef, a TF1 SavedModel,
an Estimator model_dir — written by real TF1 APIs (zoo/build.py), read by ferry: inspected, migrated with a
hand-written spec and with `architecture: auto`, verified against the original artifact itself.
(The example catalogue's run of all of them is tests/test_flow.py; their bad inputs tests/test_faults.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ferry.cli import main
from ferry.keras3.run import load_keras
from ferry.sources import FORMATS, detect
from ferry.spec import load_catalogue, load_spec
from ferry.stages import WorkDir
from ferry.tf1.formats import READERS
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard_records

ARTIFACTS = {"frozen_cnn": "frozen.pb", "savedmodel_mlp": "savedmodel", "estimator_dnn": "model_dir",
             "mlp": "model.ckpt.meta"}


@pytest.mark.unit
def test_each_format_is_read_where_it_is_described():
    assert set(FORMATS) == set(READERS) == {"meta", "frozen_graph", "saved_model", "estimator_dir"}


@pytest.mark.tf1
def test_each_artifact_is_recognised_and_inspected(zoo, capsys):
    expected = {"frozen_cnn": "frozen_graph", "savedmodel_mlp": "saved_model", "estimator_dnn": "estimator_dir",
                "mlp": "meta"}
    for model, artifact in ARTIFACTS.items():
        path = zoo / model / artifact
        assert detect(path) == expected[model]
        assert main(["inspect", str(path), "--json"]) == 0
        inventory = json.loads(capsys.readouterr().out)
        assert inventory["format"] == expected[model]
        if model == "savedmodel_mlp":  # the SavedModel's own signature, its keys the serving names
            assert inventory["signature"] == {"inputs": {"pixels": "x:0"},
                                              "outputs": {"scores": "scores:0", "classes": "classes:0"},
                                              "declared": True}
        if model == "frozen_cnn":  # the weights are constants, named after the variables they were
            weights = {v["name"]: v["kind"] for v in inventory["variables"] if not v["training_only"]}
            assert weights == {n: "constant" for n in ("conv1/kernel", "bn1/gamma", "bn1/beta", "bn1/moving_mean",
                                                       "bn1/moving_variance", "conv2/kernel", "conv2/bias",
                                                       "logits/kernel", "logits/bias")}
        if model == "estimator_dnn":  # fed by a tf.data iterator: the graph is cut at its output
            assert [p["tensor"] for p in inventory["placeholders"]] == ["IteratorGetNext:0"]
            assert [o["tensor"] for o in inventory["outputs"]] == ["dnn/logits/BiasAdd:0"]
    notes = zoo.parent / "notes.txt"
    notes.write_text("not a model")
    assert main(["inspect", str(notes)]) == 2
    assert "is none of the formats ferry reads" in capsys.readouterr().err


def migrate(spec, work: Path) -> dict:
    """The stages up to verification, in this process; the spec with its resolved signature and the records."""
    work = WorkDir(work)
    inspected = inspect_graph(spec, work)
    spec = spec.with_signature(inspected["inputs"], inspected["outputs"])
    reconstructed = reconstruct(spec, inspected)
    restored = restore_weights(spec, reconstructed, inspected, work)
    records = [verify_shard_records(spec, reconstructed, restored, shard, i) for i, shard in
               enumerate(spec.shard_paths())]
    return {"spec": spec, "reconstructed": reconstructed, "restored": restored, "records": records}


@pytest.mark.tf1
def test_an_estimator_checkpoint_is_chosen_by_name_and_verified_against_that_checkpoint(catalogue, tmp_path):
    spec = load_catalogue(catalogue, only=["estimator_dnn"]).specs["estimator_dnn"]
    assert spec.source.checkpoint_prefix.name == "model.ckpt-10"  # latest, from the `checkpoint` state file
    earlier = spec.model_copy(update={"source": spec.source.model_copy(update={"checkpoint": "model.ckpt-5"})})
    assert earlier.source.checkpoint_prefix.name == "model.ckpt-5"
    latest, first = migrate(spec, tmp_path / "latest"), migrate(earlier, tmp_path / "first")
    for run in (latest, first):
        assert all(r["passed"] for r in run["records"]) and run["restored"]["coverage"]["model_weights"] == 1.0
    weights = [load_keras(run["spec"], run["reconstructed"], run["restored"]["weights"]).get_weights()
               for run in (latest, first)]
    assert any(not np.array_equal(a, b) for a, b in zip(*weights))  # five steps of training apart


@pytest.mark.tf1
@pytest.mark.parametrize("model", ["frozen_cnn", "savedmodel_mlp", "estimator_dnn"])
def test_each_format_converts_with_auto(catalogue, tmp_path, model):
    path = catalogue.parent / "models" / f"{model}.yaml"
    data = yaml.safe_load(path.read_text())
    data.pop("name_map", None)
    data["architecture"] = "auto"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_catalogue(catalogue, only=[model]).specs[model]
    run = migrate(spec, tmp_path)
    assert run["restored"]["coverage"]["model_weights"] == 1.0
    for record in run["records"]:
        assert record["passed"], record
        assert all(o["max_abs_err"] <= 1e-5 for o in record["outputs"].values())


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_scan_finds_every_model_drafts_specs_that_migrate_and_reports_a_broken_file(zoo, tmp_path, monkeypatch):
    from ferry import scan
    from flows.migrate import migrate_catalogue

    bucket = tmp_path / "bucket"
    shutil.copytree(zoo, bucket)
    broken = bucket / "broken" / "frozen.pb"  # a .pb cut short in transfer
    broken.parent.mkdir()
    broken.write_bytes((zoo / "frozen_cnn" / "frozen.pb").read_bytes()[:200])
    (tmp_path / "pyproject.toml").write_text("")  # the project root: exports and MLflow land here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = scan.main(bucket, tmp_path / "specs" / "scanned")

    models = sorted(p.name for p in zoo.iterdir())
    assert sorted(r["name"] for r in rows) == sorted([*models, "broken"])
    by_name = {r["name"]: r for r in rows}
    assert "frozen.pb is not a GraphDef (.pb) file (truncated or another format)" in by_name["broken"]["error"]
    assert {r["format"] for r in rows} == {"meta", "frozen_graph", "saved_model", "estimator_dir"}
    assert all(by_name[m]["auto"] and not by_name[m]["error"] for m in models), \
        {m: by_name[m]["blockers"] for m in models}
    report = json.loads((tmp_path / "specs" / "scanned" / "scan.json").read_text())
    assert [r["name"] for r in report["models"]] == [r["name"] for r in rows]

    catalogue = tmp_path / "specs" / "scanned" / "catalogue.yaml"
    cat = load_catalogue(catalogue)
    assert sorted(cat.specs) == models and not cat.problems
    results = migrate_catalogue(str(catalogue))  # drafted specs migrate unchanged
    assert {r["model"]: r["status"] for r in results} == {m: "passed" for m in models}
    assert all(r["coverage"] == 1.0 for r in results)


@pytest.mark.tf1
def test_draft_spec_of_each_format_validates(zoo, tmp_path):
    for model, artifact in ARTIFACTS.items():
        out = tmp_path / "specs" / f"{model}.yaml"
        assert main(["draft-spec", str(zoo / model / artifact), "-o", str(out)]) == 0
        spec = load_spec(out)
        assert spec.source.format == detect(zoo / model / artifact) and spec.architecture.graph is not None

