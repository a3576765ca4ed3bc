"""A real MLflow tracking server on loopback for tests.

`mlflow_server` (session fixture) starts, in a temporary folder TMP and on a free port PORT,

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \\
    mlflow server --host 127.0.0.1 --port PORT --workers 1 \\
        --backend-store-uri sqlite:///TMP/mlflow.db --serve-artifacts --artifacts-destination TMP/artifacts

as a subprocess in its own process group, waits until `GET /health` answers `OK` and yields the
server's url `http://127.0.0.1:PORT` (a tracking URI for `MlflowClient`/`MLFLOW_TRACKING_URI`, and
the UI's address); at the end it kills the process group. The server's output is in TMP/server.log.

Notes on mlflow 3.17.2:
- `--serve-artifacts` is the default; it is spelled out because the tests rely on it: experiments
  created without an artifact location (ferry creates them so for an http tracking URI) get
  `mlflow-artifacts:/`, so clients upload through the server into TMP/artifacts.
- The security middleware is on by default and accepts what a loopback server needs: Host headers
  of localhost/127.0.0.1 on any port and CORS origins `http://127.0.0.1:*`, so neither
  `--allowed-hosts` nor `--cors-allowed-origins` is passed.
- `--workers` defaults to 4 uvicorn workers; one is plenty for a test and spares the 2 CPU cores.
- With a SQL backend the server also launches a job runner (a process plus ~7 `huey` consumers, for
  GenAI evaluation/scorer jobs) and leaves a queue folder in /dev/shm;
  `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` turns that off. Telemetry is off too.
- Startup takes ~10 s on 2 cores (imports; creating the SQLite schema is ~1 s of it).

`tests/conftest.py` exposes the fixture to every test file (`from mlflow_server import mlflow_server`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect_server import STARTUP_TIMEOUT_SECONDS, _stop, free_port, wait_healthy

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def mlflow_env(**extra: str) -> dict[str, str]:
    """This process's environment less every inherited MLFLOW_* variable (a tracking URI a test set,
    the developer's settings), without the server's optional job runner and telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


@contextlib.contextmanager
def run_mlflow_server(folder: Path, port: int | None = None,
                      startup_timeout: float = STARTUP_TIMEOUT_SECONDS) -> Iterator[str]:
    """An `mlflow server` subprocess with its SQLite store and artifacts under `folder`; yields its url."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "server.log"
    command = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--serve-artifacts", "--artifacts-destination", str(folder / "artifacts")]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=folder, env=mlflow_env(), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_healthy("mlflow server", process, f"{url}/health", log, startup_timeout,
                     ok=lambda r: r.status_code == 200 and r.text.strip() == "OK")
        yield url
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking server on loopback (temporary SQLite store and artifact folder);
    its url `http://127.0.0.1:PORT`."""
    with run_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url
