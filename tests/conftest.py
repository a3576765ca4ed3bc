"""Shared fixtures: the example zoo built once by the real TF1 build script, copies of the example
catalogue in temporary folders, a temporary MLflow store, and Prefect's test harness."""

from __future__ import annotations

import ferry  # noqa: F401  (first: environment defaults for TensorFlow and Prefect)

# isort: split
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow_server import mlflow_server  # noqa: F401  (a real MLflow tracking server on loopback, session fixture)
from prefect_server import prefect_server  # noqa: F401  (a real Prefect server on loopback, session fixture)

REPO = Path(__file__).resolve().parents[1]


def run_tf1_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a script that writes TF1 artifacts in its own process: `tf_keras` (for
    `tf.compat.v1.layers`) and `disable_v2_behavior()` stay out of the test process."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-4000:]}"
    return done


def run_tf1_source(source: str, folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`run_tf1_script` for a script given as text (written to `folder/build.py`)."""
    script = folder / "build.py"
    script.write_text(source)
    return run_tf1_script(script, *args)


def build_zoo(out: Path, *extra: str) -> None:
    """The example zoo, written by zoo/build.py."""
    run_tf1_script(REPO / "zoo" / "build.py", "--out", str(out), *extra)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Path:
    """The three example models, written by real TF1 APIs in a separate process."""
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(out)
    return out


@pytest.fixture
def catalogue(tmp_path, zoo, monkeypatch) -> Path:
    """A private copy of the example catalogue (specs/) next to the zoo, with its own MLflow store."""
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    (tmp_path / "zoo").symlink_to(zoo, target_is_directory=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "specs" / "catalogue.yaml"


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary database behind an ephemeral API, for real flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    from ferry.prefect_api import startup_timeout

    with prefect_test_harness(server_startup_timeout=startup_timeout()):  # ferry's budget: ample on a busy machine
        yield


def edit_yaml(path: Path, change) -> None:
    """Load a YAML file, let `change(data)` edit it in place, write it back."""
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def keep_models(catalogue: Path, names: list[str]) -> None:
    """Delete every spec of the catalogue's `models/` folder but the named ones."""
    for spec in (catalogue.parent / "models").glob("*.yaml"):
        if spec.stem not in names:
            spec.unlink()


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact path of an MLflow run, folders included, recursively."""
    out = set()
    for item in client.list_artifacts(run_id, path):
        out.add(item.path)
        if item.is_dir:
            out |= artifact_paths(client, run_id, item.path)
    return out
