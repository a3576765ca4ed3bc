"""MLflow out of reach: the migration still completes and exports, the records wait in a journal,
and `ferry relog` logs them later into a real `mlflow server`, with nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import keep_models
from mlflow.tracking import MlflowClient
from mlflow_server import run_mlflow_server
from prefect_server import free_port

from ferry.cli import main
from ferry.review.tracking import ModelRecord, start_catalogue_run, start_model_run
from flows.migrate import migrate_catalogue

pytestmark = pytest.mark.e2e


@pytest.mark.usefixtures("prefect_harness")
def test_server_down_migration_completes_and_relog_logs_it_later(catalogue, mlflow_server, monkeypatch, capsys):
    keep_models(catalogue, ["linear", "mlp"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there

    rows = migrate_catalogue(str(catalogue))
    assert [(r["model"], r["status"]) for r in rows] == [("linear", "passed"), ("mlp", "passed")]
    assert all((Path(r["export"]) / "saved_model.pb").exists() for r in rows)  # the exports landed
    hint = rows[0]["tracking"]
    journal_id = hint.split("`ferry relog ")[1].rstrip("`")
    assert (catalogue.parent / ".ferry" / "relog" / journal_id / "ops.jsonl").exists()

    assert main(["relog", journal_id, "--catalogue", str(catalogue), "--tracking-uri", mlflow_server]) == 0
    client = MlflowClient(mlflow_server)  # a server other tests log into too: find this run's records
    experiment = client.get_experiment_by_name("ferry-examples").experiment_id
    [parent] = client.search_runs([experiment], f"tags.`ferry.review.journal` = '{journal_id}'")
    runs = {r.info.run_name: r for r in client.search_runs(
        [experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert sorted(runs) == ["linear", "mlp"]
    for model in ("linear", "mlp"):
        run = runs[model]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == "passed" and run.info.status == "FINISHED"
        assert "ferry.tracking_failed" in run.data.tags
        assert run.data.metrics["coverage.model_weights"] == 1.0
        output = "y" if model == "linear" else "probs"
        history = client.get_metric_history(run.info.run_id, f"parity.{output}.max_abs_err")
        assert sorted(m.step for m in history) == [0, 1, 2, 3]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"spec", "inventory.json", "name_map.json", "parity.json", "savedmodel"} <= artifacts
        assert len(run.inputs.dataset_inputs) == 4
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.json", "summary.txt"}

    assert main(["relog", journal_id, "--catalogue", str(catalogue), "--tracking-uri", mlflow_server]) == 2
    assert "relogged already" in capsys.readouterr().err  # a second relog would duplicate everything


def test_server_lost_mid_run_keeps_the_rest_and_relog_completes_the_same_runs(tmp_path, monkeypatch):
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text("models: []\n")
    port = free_port()
    (tmp_path / "store-a").mkdir()
    with run_mlflow_server(tmp_path / "store-a", port) as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        parent = start_catalogue_run(catalogue, "offline-test", "catalogue run")
        model = start_model_run(parent, "m", "offline-test")
        model.metrics({"coverage.model_weights": 1.0})
    assert not model.offline  # the server went away after these calls

    record = ModelRecord(model, "m")
    with record.stage("verify"):
        model.metric_steps({0: {"parity.y.max_abs_err": 0.5}, 1: {"parity.y.max_abs_err": 0.25}})
    (tmp_path / "report.json").write_text("{}")
    model.artifact(tmp_path / "report.json")
    record.finish(ok=True)
    parent.end(True)
    assert model.offline and parent.journal.exists()

    (tmp_path / "store-a").rename(tmp_path / "store-b")  # the same store, served again
    with run_mlflow_server(tmp_path / "store-b", port) as url:
        assert main(["relog", str(parent.journal.folder), "--catalogue", str(catalogue), "--tracking-uri", url]) == 0
        client = MlflowClient(url)
        run = client.get_run(model.run_id)  # the run created online got the offline records
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "passed"
        assert run.data.metrics["coverage.model_weights"] == 1.0
        assert [m.value for m in client.get_metric_history(model.run_id, "parity.y.max_abs_err")] == [0.5, 0.25]
        assert "report.json" in {a.path for a in client.list_artifacts(model.run_id)}
        assert "ferry.tracking_failed" in run.data.tags
        assert client.get_run(parent.run_id).info.status == "FINISHED"
