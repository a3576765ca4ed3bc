"""The Prefect deployments of prefect.yaml against a real Prefect server on loopback: `prefect deploy
--all` registers them, a `prefect worker` started in the repository root runs the on-demand
deployment for one model, and `prefect flow-run retry` reruns a failed run once its spec is fixed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect_server import (
    REPO,
    filter_flow_runs,
    filter_task_runs,
    flow_run_logs,
    prefect_cli,
    prefect_worker,
    read_deployment,
    read_flow_run,
    read_work_pool,
    wait_for_flow_run,
    wait_for_log,
)

pytestmark = pytest.mark.e2e

SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory) -> Path:
    """The `ferry` process pool and `prefect deploy --all` run from the repository root, as the README
    says; the PREFECT_HOME the CLI used (a temporary one)."""
    home = tmp_path_factory.mktemp("prefect-cli")
    prefect_cli(prefect_server, home, "work-pool", "create", "ferry", "--type", "process")
    done = prefect_cli(prefect_server, home, "--no-prompt", "deploy", "--all", timeout=240, check=False)
    if done.returncode and "422 Unprocessable Entity" in done.stderr and "/workers/filter" in done.stderr:
        pytest.fail("prefect deploy: after creating a deployment it reads the pool's workers with "
                    "`limit: null, offset: null`, which prefect's server rejects (422) under fastapi >= 0.151; "
                    "fastapi 0.150.0 accepts it\n" + done.stderr[-1500:])
    assert done.returncode == 0, f"deploy --all: {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return home


def test_deploy_all_registers_nightly_and_on_demand(prefect_server, deployed):
    assert read_work_pool(prefect_server, "ferry")["type"] == "process"

    nightly = read_deployment(prefect_server, "migrate-catalogue", "nightly")
    on_demand = read_deployment(prefect_server, "migrate-model", "on-demand")
    for deployment in (nightly, on_demand):
        assert deployment["work_pool_name"] == "ferry"
        assert deployment["description"]
        # the flow runs in the worker's working directory: nothing of this machine is stored
        assert deployment["job_variables"] == {"working_dir": "."}
        assert deployment["pull_steps"] == [{SET_WORKING_DIRECTORY: {"directory": "."}}]
        assert deployment["path"] is None and deployment["storage_document_id"] is None
        assert str(REPO) not in json.dumps(deployment)

    assert nightly["entrypoint"] == "flows/migrate.py:migrate_catalogue"
    assert nightly["parameters"] == {"catalogue": "specs/catalogue.yaml"}
    [schedule] = nightly["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert not nightly["paused"]

    assert on_demand["entrypoint"] == "flows/migrate.py:migrate_model"
    assert on_demand["schedules"] == []
    assert on_demand["parameters"] == {"catalogue": "specs/catalogue.yaml"}
    schema = on_demand["parameter_openapi_schema"]
    assert schema["required"] == ["model"]  # given at run time: -p model=NAME
    assert {"model", "catalogue", "force", "force_stage"} <= set(schema["properties"])

    # the test server runs no scheduler: the nightly schedule never starts a run behind the test's back
    assert filter_flow_runs(prefect_server, nightly["id"]) == []


def _export_dir(spec_file: Path) -> Path:
    """Where a spec's SavedModel lands: `export.dir`, relative to the spec file."""
    return (spec_file.parent / yaml.safe_load(spec_file.read_text())["export"]["dir"]).resolve()


def _run_deployment(api_url: str, home: Path, **params: str) -> str:
    """`prefect deployment run migrate-model/on-demand -p K=V ...`; the flow run's id."""
    args = [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
    done = prefect_cli(api_url, home, "deployment", "run", "migrate-model/on-demand", *args)
    return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout).group(1)


def test_worker_runs_on_demand_model_and_retries_a_failed_run(prefect_server, deployed, catalogue, tmp_path):
    specs = catalogue.parent / "models"
    linear_export, mlp_export = _export_dir(specs / "linear.yaml"), _export_dir(specs / "mlp.yaml")
    assert linear_export == catalogue.parent.parent / "exports" / "linear"
    assert not linear_export.exists() and not mlp_export.exists()

    # The worker runs in the repository root; a catalogue given relative to it (as the nightly
    # default `specs/catalogue.yaml` is) resolves against the checkout.
    relative_catalogue = os.path.relpath(catalogue, REPO)
    log = tmp_path / "worker.log"
    env = {"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}
    with prefect_worker(prefect_server, deployed, "ferry", env=env, log=log):
        run_id = _run_deployment(prefect_server, deployed, model="linear", catalogue=relative_catalogue)
        run = wait_for_flow_run(prefect_server, run_id, timeout=180, log=log)
        assert run["state_type"] == "COMPLETED", flow_run_logs(prefect_server, run_id)
        assert run["parameters"] == {"model": "linear", "catalogue": relative_catalogue}
        assert run["name"] == "migrate-linear"
        assert (linear_export / "saved_model.pb").is_file()
        assert not mlp_export.exists()  # one model, not the catalogue
        assert filter_task_runs(prefect_server, run_id), "the stages run as Prefect tasks"
        # the flow run inherited the worker's environment: it logged to this test's MLflow store
        mlflow = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        experiment = mlflow.get_experiment_by_name("ferry-examples")
        [model_run] = mlflow.search_runs([experiment.experiment_id], "attributes.run_name = 'linear'")
        assert model_run.data.tags["status"] == "passed"

        # A broken spec fails the run: mlp's first layer no longer fits the checkpoint.
        mlp_spec = specs / "mlp.yaml"
        good = mlp_spec.read_text()
        mlp_spec.write_text(good.replace("{class: Dense, units: 64,", "{class: Dense, units: 65,", 1))
        assert mlp_spec.read_text() != good
        failed_id = _run_deployment(prefect_server, deployed, model="mlp", catalogue=str(catalogue))
        failed = wait_for_flow_run(prefect_server, failed_id, timeout=180, log=log)
        logs = wait_for_log(prefect_server, failed_id, "mlp: failed at restore")  # logs arrive in batches
        assert failed["state_type"] == "FAILED" and "mlp: failed at restore" in logs, logs
        assert not mlp_export.exists()

        # Fix the spec, retry the same flow run: the worker picks it up again and it completes.
        mlp_spec.write_text(good)
        done = prefect_cli(prefect_server, deployed, "flow-run", "retry", failed_id)
        assert "scheduled for retry" in done.stdout
        assert read_flow_run(prefect_server, failed_id)["state_type"] in {"SCHEDULED", "PENDING", "RUNNING"}
        retried = wait_for_flow_run(prefect_server, failed_id, timeout=180, log=log)
        assert retried["state_type"] == "COMPLETED", flow_run_logs(prefect_server, failed_id)
        assert retried["run_count"] >= 2
        assert (mlp_export / "saved_model.pb").is_file()
