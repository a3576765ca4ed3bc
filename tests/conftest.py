"""Shared fixtures: the example zoo built once by the real TF1 build script, copies of the example
catalogue in temporary folders, a temporary MLflow store, and Prefect's test harness."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
import pytest

REPO = Path(__file__).resolve().parents[1]


def build_zoo(out: Path, *extra: str) -> None:
    """Run zoo/build.py in its own process (tf_keras + TF1 behaviour stay out of this one)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, str(REPO / "zoo" / "build.py"), "--out", str(out), *extra],
                   check=True, env=env, capture_output=True, text=True)


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

    with prefect_test_harness(server_startup_timeout=120):
        yield
