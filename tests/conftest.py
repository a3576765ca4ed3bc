"""Shared fixtures: the example zoo built once by the real TF1 build script, copies of the example
catalogue in temporary folders, a temporary MLflow store, and Prefect's test harness; the helpers the test
files share; and the rule that every test belongs to a tier (`unit`, `tf1`, `e2e`: pyproject.toml).

Keep this module light: `pytest -m unit` imports it and every test module, so TensorFlow, Keras, Prefect's
flows and ferry's stages are imported inside the helpers that need them, not here."""

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

from ferry.mapping.namemap import Tensor
from ferry.spec import load_catalogue
from ferry.stages import WorkDir

REPO = Path(__file__).resolve().parents[1]
TF1_BUILDERS = REPO / "tests" / "tf1_builders"
TIERS = ("unit", "tf1", "e2e")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an unmarked test fails `pytest -m unit` too
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries a tier mark; a run that collects one without fails before running anything."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(tier) for tier in TIERS)]
    if unmarked:
        raise pytest.UsageError(
            f"{len(unmarked)} test(s) without a tier mark; mark each (or its module: `pytestmark = "
            f"pytest.mark.unit`) with one of {', '.join(TIERS)} (see pyproject.toml [tool.pytest.ini_options] "
            "markers):\n  " + "\n  ".join(unmarked))


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


@pytest.fixture(scope="session")
def slim_zoo(tmp_path_factory) -> Path:
    """The default (non-large) tf_slim networks, written once by zoo/slim_nets.py run as a user runs it (the
    script sets its TF1 environment itself); tests/test_slim_nets.py checks them, tests/test_auto.py converts
    them. Nothing writes into it (test_slim_nets reruns the script over it and checks that)."""
    out = tmp_path_factory.mktemp("slim_zoo")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, str(REPO / "zoo" / "slim_nets.py"), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def twin_mlp(tmp_path_factory) -> Path:
    """`twin_mlp/`: an MLP with two same-shaped hidden layers, written by tests/tf1_builders/twin_mlp.py (the
    zoo's script) in its own process; tests/test_stages.py and tests/test_divergence.py read it."""
    out = tmp_path_factory.mktemp("twin")
    run_tf1_script(TF1_BUILDERS / "twin_mlp.py", out)
    return out / "twin_mlp"


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


def spec_of(catalogue: Path, name: str):
    """One model's spec of a catalogue (its defaults merged)."""
    return load_catalogue(catalogue, only=[name]).specs[name]


def restore_stages(spec, work: Path) -> tuple[dict, dict]:
    """inspect, reconstruct and restore as plain functions (no Prefect, no MLflow), their files in `work`:
    (reconstruct's model info, restore's result)."""
    from tasks.inspect import inspect_graph
    from tasks.reconstruct import reconstruct
    from tasks.restore import restore_weights

    work.mkdir(parents=True, exist_ok=True)
    inspected = inspect_graph(spec, WorkDir(work))
    info = reconstruct(spec, inspected)
    return info, restore_weights(spec, info, inspected, WorkDir(work))


def tensors(shapes: dict[str, tuple], dtype: str = "float32") -> dict[str, Tensor]:
    """Name-map `Tensor`s by name (`global_step` int64, the others `dtype`)."""
    return {k: Tensor(v, "int64" if k == "global_step" else dtype) for k, v in shapes.items()}


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact path of an MLflow run, folders included, recursively."""
    out = set()
    for item in client.list_artifacts(run_id, path):
        out.add(item.path)
        if item.is_dir:
            out |= artifact_paths(client, run_id, item.path)
    return out
