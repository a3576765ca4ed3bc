"""Bulk runs on a real Prefect API: rerunning only what failed (asserted from task run states), a
model's process crashing, hanging or blowing its memory failing that model only, `--force --stage`,
shards spread over logical devices, and the Dask fan-out with two worker processes."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import edit_yaml, keep_models
from prefect.client.orchestration import get_client

from flows.migrate import CatalogueFailed, migrate_catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

FAULTY_FACTORY = '''
"""The example MLP, built by a factory that misbehaves while a FAULTS_ON file lies beside it."""
import os
import signal
import time
from pathlib import Path

import keras
import numpy as np



def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def mlp(inputs: dict, fault: str):
    if Path(__file__).with_name("FAULTS_ON").exists():
        if fault == "crash":  # reconstruct builds the model in the model's process; restore saves its weights
            keras.Model.save_weights = _die
        if fault == "hang":
            time.sleep(3600)
        if fault == "hog":
            hog = [np.ones(1 << 27) for _ in range(64)]  # 64 GiB, 1 GiB at a time, until stopped
    x = next(iter(inputs.values()))
    x = keras.layers.Dense(64, activation="relu", name="dense")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense_1")(x)
    return keras.layers.Dense(10, activation="softmax", name="dense_2")(x)
'''


def task_states(flow_run_id) -> dict[str, str]:
    """Task run name -> state name, for every task run of a flow run (read back from the API; a name run
    twice, as a refreshed cache entry is, keeps its last run)."""
    with get_client(sync_client=True) as client:
        response = client._client.post("/task_runs/filter", json={
            "flow_runs": {"id": {"any_": [str(flow_run_id)]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200})
        response.raise_for_status()
    return {run["name"]: run["state"]["name"] for run in response.json()}


def run(catalogue: Path, **options):
    """Run the catalogue flow; (rows or the CatalogueFailed, task run states)."""
    state = migrate_catalogue(str(catalogue), return_state=True, **options)
    outcome = state.result(raise_on_failure=False)
    return outcome, task_states(state.state_details.flow_run_id)


def stage_states(states: dict[str, str], model: str) -> dict[str, str]:
    return {name.split("/", 1)[1]: s for name, s in states.items() if name.startswith(f"{model}/")}


def test_rerun_executes_only_what_failed(catalogue):
    keep_models(catalogue, ["linear", "mlp", "gru_seq"])
    edit_yaml(catalogue, lambda c: c.update(run={"cpu_devices": 3}))
    gru = catalogue.parent / "models" / "gru_seq.yaml"
    original = gru.read_text()
    edit_yaml(gru, lambda s: s["verify"].update(tolerance={"atol": 1e-9, "rtol": 1e-9}))  # too tight: 2.4e-7 off

    failed, states = run(catalogue)
    assert isinstance(failed, CatalogueFailed)
    assert str(failed) == "1 of 3 models failed: gru_seq at verify"
    assert {r["model"]: r["status"] for r in failed.rows} == {"gru_seq": "failed", "linear": "passed", "mlp": "passed"}
    assert set(states.values()) == {"Completed", "Failed"}  # a cold run: nothing cached
    assert stage_states(states, "gru_seq")["verify-shard-0"] == "Failed" and "gru_seq/export" not in states
    work = catalogue.parent / ".ferry" / "work"  # the project root: the catalogue folder (no pyproject.toml)
    devices = [s["device"] for s in json.loads((work / "mlp" / "parity.json").read_text())["shards"]]
    assert devices == ["/device:CPU:0", "/device:CPU:1", "/device:CPU:2", "/device:CPU:0"]

    gru.write_text(original)  # the fix
    rows, states = run(catalogue)
    assert [(r["model"], r["status"]) for r in rows] == [("gru_seq", "passed"), ("linear", "passed"), ("mlp", "passed")]
    assert stage_states(states, "gru_seq") == {
        "inspect": "Cached", "reconstruct": "Cached", "restore": "Cached", "export": "Completed",
        **{f"verify-shard-{i}": "Completed" for i in range(4)}}
    for model in ("linear", "mlp"):
        assert set(stage_states(states, model).values()) == {"Cached"}
        assert len(stage_states(states, model)) == 8  # inspect, reconstruct, restore, 4 shards, export
    assert {r["model"]: r["cached"] for r in rows} == {
        "gru_seq": "inspect,reconstruct,restore", "linear": "all", "mlp": "all"}

    # On purpose: verify (and export after it) recomputed, the earlier stages still cached.
    rows, states = run(catalogue, only=["mlp"], force=True, force_stage="verify")
    assert set(stage_states(states, "mlp").items()) == {
        ("inspect", "Cached"), ("reconstruct", "Cached"), ("restore", "Cached"), ("export", "Completed"),
        *{(f"verify-shard-{i}", "Completed") for i in range(4)}}

    # A deleted SavedModel is not taken from the cache: export runs again.
    shutil.rmtree(rows[0]["export"])
    rows, states = run(catalogue, only=["mlp"])
    assert stage_states(states, "mlp")["export"] == "Completed" and Path(rows[0]["export"]).is_dir()


def test_crash_hang_and_memory_blowup_fail_their_model_only(catalogue):
    keep_models(catalogue, ["linear", "mlp"])
    factories = catalogue.parent / "factories"
    (factories / "faulty.py").write_text(textwrap.dedent(FAULTY_FACTORY))
    (factories / "FAULTS_ON").touch()
    mlp = catalogue.parent / "models" / "mlp.yaml"
    for fault in ("crash", "hang", "hog"):
        spec = yaml.safe_load(mlp.read_text())
        spec["name"] = f"mlp_{fault}"
        spec["architecture"] = {"factory": {"function": "factories.faulty:mlp", "kwargs": {"fault": fault}}}
        spec["export"]["dir"] = f"../../exports/mlp_{fault}"
        (mlp.parent / f"mlp_{fault}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    edit_yaml(catalogue, lambda c: c.update(run={"max_parallel": 3, "timeouts": {"reconstruct": 20},
                                                 "memory_limit_mb": 3000}))

    failed, _ = run(catalogue)
    assert isinstance(failed, CatalogueFailed)
    rows = {r["model"]: r for r in failed.rows}
    assert {m: (r["status"], r["failed_stage"]) for m, r in rows.items()} == {
        "linear": ("passed", ""), "mlp": ("passed", ""), "mlp_crash": ("failed", "restore"),
        "mlp_hang": ("failed", "reconstruct"), "mlp_hog": ("failed", "reconstruct")}
    assert "killed by SIGKILL" in rows["mlp_crash"]["error"]
    assert "did not finish within 20 s (run.timeouts.reconstruct)" in rows["mlp_hang"]["error"]
    assert "went over run.memory_limit_mb (3000 MB)" in rows["mlp_hog"]["error"]

    (factories / "FAULTS_ON").unlink()  # the fix
    rows, states = run(catalogue)
    assert all(r["status"] == "passed" for r in rows)
    assert stage_states(states, "mlp_crash")["reconstruct"] == "Cached"
    assert stage_states(states, "mlp_crash")["restore"] == "Completed"
    assert stage_states(states, "mlp_hang")["inspect"] == "Cached"
    assert stage_states(states, "mlp_hang")["reconstruct"] == "Completed"
    assert set(stage_states(states, "linear").values()) == {"Cached"}


# One model of each source format (the whole example catalogue runs in tests/test_flow.py): four models on two
# single-threaded workers, all submitted at once, keep both workers busy.
DASK_MODELS = ["estimator_dnn", "frozen_cnn", "linear", "savedmodel_mlp"]


def test_dask_fan_out_with_two_worker_processes(catalogue):
    keep_models(catalogue, DASK_MODELS)
    rows = migrate_catalogue(str(catalogue), dask="local:2", max_parallel=1)
    assert [(r["model"], r["status"], r["coverage"]) for r in rows] == [(m, "passed", 1.0) for m in DASK_MODELS]
    assert len({r["worker"] for r in rows}) == 2  # both worker processes migrated models
