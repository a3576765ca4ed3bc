"""A real Prefect server on loopback for tests, and small helpers around it.

`prefect_server` (session fixture) starts `prefect server start --host 127.0.0.1 --port <free port>`
as a subprocess with its own temporary PREFECT_HOME and SQLite database, waits until
`/api/health` answers and yields the API url `http://127.0.0.1:PORT/api`; at the end it kills the
server's process group. Nothing of the developer's Prefect profile is read or written: every
Prefect process started here gets a temporary PREFECT_HOME and no inherited PREFECT_* variable.

The helpers call the REST API with httpx and minimal JSON bodies. The Python client of prefect
3.8.8 sends `"limit": null, "offset": null` in many `read_*`/filter calls, which the server under
fastapi 0.154 answers with 422; explicit bodies avoid that.

`tests/conftest.py` exposes the fixture to every test file (`from prefect_server import
prefect_server`); the helpers are imported the same way, like `from conftest import ...`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.prefect_api import STARTUP_TIMEOUT_SECONDS  # one start-up budget for every server a test starts

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(api_url: str | None, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a Prefect subprocess: this one's, less every inherited PREFECT_* variable
    (profile, API url or key of the developer), with its own PREFECT_HOME and the given API url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_CLI_COLORS="false",
               PREFECT_CLI_WRAP_LINES="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def prefect_cli(api_url: str, home: Path, *args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
                timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run `prefect ARGS` against the server at `api_url` (from `cwd`, default the repository root)."""
    done = subprocess.run([PREFECT, *args], cwd=cwd, env={**prefect_env(api_url, home), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, (f"prefect {' '.join(args)} exited {done.returncode}:\n"
                                      f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def _stop(process: subprocess.Popen, grace: float = 10) -> None:
    """Stop a process started with `start_new_session=True`: SIGTERM to its group, then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def run_prefect_server(folder: Path, port: int | None = None,
                       startup_timeout: float = STARTUP_TIMEOUT_SECONDS) -> Iterator[str]:
    """A `prefect server start` subprocess with its home and database under `folder`; yields its API url.

    The scheduler service is off: a deployment's cron schedule is stored and reported as usual, but
    no scheduled run is created, so a worker in a test never picks up a run nobody asked for.
    """
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = folder / "server.log"
    env = prefect_env(None, folder / "home",
                      PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
                      PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
    with open(log, "w") as out:
        process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_healthy("prefect server", process, f"{api_url}/health", log, startup_timeout)
        yield api_url
    finally:
        _stop(process)


def wait_healthy(what: str, process: subprocess.Popen, health_url: str, log: Path, timeout: float,
                 ok=lambda response: response.status_code == 200) -> None:
    """Wait until `health_url` answers `ok`; raise with the log's tail if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if ok(httpx.get(health_url, timeout=2)):
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout}s:\n{_tail(log)}")
        time.sleep(0.25)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server on loopback (temporary database); the API url `http://127.0.0.1:PORT/api`."""
    with run_prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url:
        yield api_url


@contextlib.contextmanager
def prefect_worker(api_url: str, home: Path, pool: str, *, cwd: Path = REPO, env: dict[str, str] | None = None,
                   log: Path | None = None, poll_seconds: float = 1) -> Iterator[subprocess.Popen]:
    """`prefect worker start --pool POOL` running in `cwd` (default the repository root) until the end
    of the block; its output (the flow runs' logs included) goes to `log` (default `home/worker.log`).
    `env` is added to its environment (e.g. MLFLOW_TRACKING_URI), which the flow runs inherit."""
    log = log or home / "worker.log"
    full_env = {**prefect_env(api_url, home, PREFECT_WORKER_QUERY_SECONDS=str(poll_seconds)), **(env or {})}
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--install-policy", "never"],
                                   cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        yield process
    finally:
        _stop(process, grace=20)


# REST helpers: minimal bodies (see the module docstring).

def api(api_url: str, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
    """Call the REST API; the decoded JSON answer (None for an empty one)."""
    response = httpx.request(method, f"{api_url}{path}", json=json, timeout=30)
    assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text[:2000]}"
    return response.json() if response.content else None


def read_flow_run(api_url: str, flow_run_id: str) -> dict[str, Any]:
    return api(api_url, "GET", f"/flow_runs/{flow_run_id}")


def read_deployment(api_url: str, flow_name: str, deployment_name: str) -> dict[str, Any]:
    return api(api_url, "GET", f"/deployments/name/{flow_name}/{deployment_name}")


def read_work_pool(api_url: str, name: str) -> dict[str, Any]:
    return api(api_url, "GET", f"/work_pools/{name}")


def filter_flow_runs(api_url: str, deployment_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Flow runs (of one deployment), newest first."""
    body: dict[str, Any] = {"limit": limit, "offset": 0, "sort": "EXPECTED_START_TIME_DESC"}
    if deployment_id:
        body["deployments"] = {"id": {"any_": [deployment_id]}}
    return api(api_url, "POST", "/flow_runs/filter", body)


def filter_task_runs(api_url: str, flow_run_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The task runs of one flow run."""
    body = {"limit": limit, "offset": 0, "flow_runs": {"id": {"any_": [flow_run_id]}}}
    return api(api_url, "POST", "/task_runs/filter", body)


def flow_run_logs(api_url: str, flow_run_id: str, limit: int = 200) -> str:
    """The flow run's log lines, oldest first, as text."""
    body = {"limit": limit, "offset": 0, "sort": "TIMESTAMP_ASC", "logs": {"flow_run_id": {"any_": [flow_run_id]}}}
    return "\n".join(f"{r['level']:>2} {r['message']}" for r in api(api_url, "POST", "/logs/filter", body))


def wait_for_log(api_url: str, flow_run_id: str, text: str, timeout: float = 60) -> str:
    """The flow run's logs once they hold `text` (a run's last lines reach the API a few seconds after its
    final state), or as they are after `timeout`."""
    deadline = time.monotonic() + timeout
    while text not in (logs := flow_run_logs(api_url, flow_run_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return logs


def wait_for_flow_run(api_url: str, flow_run_id: str, timeout: float = 120, states=FINAL_STATES,
                      log: Path | None = None) -> dict[str, Any]:
    """Poll the flow run until its state type is one of `states` (default: a final state); the run.
    On timeout the error holds the run's state, its logs and the tail of `log` (e.g. the worker's)."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_flow_run(api_url, flow_run_id)
        if run["state_type"] in states:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {flow_run_id} still {run['state_type']} after {timeout}s\n"
                                 f"--- flow run logs\n{flow_run_logs(api_url, flow_run_id)}\n"
                                 f"--- {log}\n{_tail(log) if log else ''}")
        time.sleep(0.5)
