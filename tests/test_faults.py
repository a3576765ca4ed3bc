"""Bad input and faults, as a new user meets them: every case ends in a message that names the file and
field (or the shard, checkpoint, node), and leaves nothing partial or wrong behind — no export, no
temporary folder, no MLflow run left RUNNING, no registered model, no poisoned cache.

One catalogue run migrates many broken variants of the example `linear` model at once (each case is
then its own test), beside separate tests for what needs its own run: the catalogue's defaults, the
tracking URI, reruns after a failure, two runs at once, a killed run, the Prefect API, `auto` on google
BERT's own `modeling.py`, and `auto` on graphs it cannot translate.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TF1_BUILDERS, edit_yaml, keep_models, run_tf1_script
from mlflow.tracking import MlflowClient
from prefect_server import free_port

from ferry.cli import main
from ferry.spec import SpecError, load_catalogue
from flows.migrate import CatalogueFailed, migrate_catalogue


@dataclass(frozen=True)
class Case:
    stage: str  # where the model must fail
    message: str  # what its error must say
    change: Callable[[dict, Path], None]  # edits the spec (a dict) and writes files into the case's folder


def shard(name: str, **arrays) -> Callable[[dict, Path], None]:
    """A case whose only shard holds `arrays`."""
    def change(spec: dict, folder: Path) -> None:
        np.savez(folder / name, **arrays)
        spec["verify"]["shards"] = str(folder / name)
    return change


def keyed_shard(name: str, keys: dict[str, str], **arrays) -> Callable[[dict, Path], None]:
    """A case whose only shard holds `arrays`, read through the key map `keys` (`verify.npz.keys`)."""
    def change(spec: dict, folder: Path) -> None:
        shard(name, **arrays)(spec, folder)
        spec["verify"]["npz"] = {"keys": keys}
    return change


def tfrecord(name: str, rows: list[dict[str, list[float]]], features: dict) -> Callable[[dict, Path], None]:
    """A case whose only shard is a TFRecord of `tf.Example`s (float lists), written by `tf.io.TFRecordWriter`."""
    def change(spec: dict, folder: Path) -> None:
        import tensorflow as tf

        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for row in rows:
                feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in row.items()}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        spec["verify"].update(shards=str(folder / name), tfrecord={"features": features})
    return change


def files(name: str, data: bytes, key: str) -> Callable[[dict, Path], None]:
    """A case whose `source.<key>` (or `verify.shards`) points at a file holding `data`."""
    def change(spec: dict, folder: Path) -> None:
        (folder / name).write_bytes(data)
        section = "verify" if key == "shards" else "source"
        spec[section][key] = str(folder / name)
    return change


def truncated_checkpoint(spec: dict, folder: Path) -> None:
    zoo = folder.parent.parent / "zoo" / "linear"  # <root>/cases/<case> -> <root>/zoo
    for file in zoo.glob("model.ckpt.*"):
        shutil.copy(file, folder / file.name)
    data = next(folder.glob("model.ckpt.data-*"))
    data.write_bytes(data.read_bytes()[:1])  # a copy cut short
    spec["source"]["checkpoint"] = str(folder / "model.ckpt")


def layers(*specs: dict) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec["architecture"] = {"layers": list(specs)}
    return change


def rules(*items: dict) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec["name_map"] = {"rules": list(items)}
    return change


def setting(section: str, key: str, value) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec.setdefault(section, {})[key] = value
    return change


def checkpoint_of(model: str) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec["source"]["checkpoint"] = f"../../zoo/{model}/model.ckpt"
    return change


def not_a_graph(spec: dict, folder: Path) -> None:
    (folder / "model.meta").write_bytes(b"\x00garbage")
    spec["source"].update(meta=str(folder / "model.meta"), checkpoint="../../zoo/linear/model.ckpt")


def factory(function: str) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec["architecture"] = {"factory": {"function": function}}
    return change


def users_folder(spec: dict, folder: Path) -> None:
    """export.dir names a folder of the user's own files."""
    (folder / "mine" / "sub").mkdir(parents=True)
    (folder / "mine" / "notes.txt").write_text("keep me")
    (folder / "mine" / "sub" / "data.csv").write_text("a,b\n1,2\n")
    spec["export"]["dir"] = str(folder / "mine")


def a_file(spec: dict, folder: Path) -> None:
    """export.dir names a file."""
    (folder / "model.out").write_text("not a folder")
    spec["export"]["dir"] = str(folder / "model.out")


def source(**fields) -> Callable[[dict, Path], None]:
    """A case whose source is another format (paths relative to the spec, as users write them)."""
    def change(spec: dict, folder: Path) -> None:
        spec["source"] = {k: v(folder) if callable(v) else v for k, v in fields.items()}
    return change


def estimator_without_state(folder: Path) -> str:
    """A copy of the example Estimator model_dir without its `checkpoint` state file."""
    shutil.copytree(folder.parent.parent / "zoo" / "estimator_dnn" / "model_dir", folder / "model_dir")
    (folder / "model_dir" / "checkpoint").unlink()
    return str(folder / "model_dir")


def truncated_pb(folder: Path) -> str:
    data = (folder.parent.parent / "zoo" / "frozen_cnn" / "frozen.pb").read_bytes()
    (folder / "frozen.pb").write_bytes(data[: len(data) // 3])
    return str(folder / "frozen.pb")


def export_dir(name: str) -> Callable[[dict, Path], None]:
    def change(spec: dict, folder: Path) -> None:
        spec["export"]["dir"] = f"../../exports/{name}"
    return change


NAN = np.full((8, 1), np.nan, np.float32)
CASES: dict[str, Case] = {
    # the verification data
    "shard_missing_input": Case("spec", "shard.npz has no array for input(s) ['x'] (it holds ['images'])",
                                shard("shard.npz", images=np.zeros((4, 1), np.float32))),
    "shard_corrupt": Case("spec", "shard.npz is not a readable .npz file (BadZipFile",
                          files("shard.npz", b"PK\x03\x04 not really a zip", "shards")),
    "shard_empty": Case("spec", "shard.npz holds no rows (its arrays are empty)",
                        shard("shard.npz", x=np.zeros((0, 1), np.float32))),
    "shard_of_objects": Case("spec", "['x'] hold Python objects; ferry reads numeric arrays only (never unpickles)",
                             shard("shard.npz", x=np.array([{"a": 1}], dtype=object))),
    "shard_scalar": Case("spec", "['x'] are scalars; each input needs a batch axis",
                         shard("shard.npz", x=np.float32(1.0))),
    "shard_wrong_shape": Case("verify",
                              "verify.shards: shard.npz: input 'x' has rows of shape [3]; the model takes [1]",
                              shard("shard.npz", x=np.zeros((4, 3), np.float32))),
    "npz_key_not_in_shard": Case("spec", "shard.npz has no array for key(s) ['x__0'] (it holds ['x_0'])",
                                 keyed_shard("shard.npz", {"x": "x__0"}, x_0=np.zeros((4, 1), np.float32))),
    "tfrecord_record_lacks_a_feature": Case(  # validation reads record 0; verify parses them all
        "verify", "verify.shards: data.tfrecord: records 0..3 do not parse as the spec's features: Name: data.tfrecord "
        "record 2, Feature: x (data type: float) is required but could not be found.",
        tfrecord("data.tfrecord", [{"x": [1.0]}, {"x": [2.0]}, {"y": [3.0]}, {"x": [4.0]}],
                 {"x": {"dtype": "float32", "shape": [1]}})),
    "nan_inputs": Case("verify", "non-finite values (NaN/inf): 8 in TF1's output, 8 in Keras', 0 where they differ",
                       shard("shard.npz", x=NAN)),
    # the spec itself
    "unknown_key": Case("spec", "verfy: unknown key", setting("verfy", "shards", "x")),
    "negative_tolerance": Case("spec", "verify.tolerance.atol: Input should be greater than or equal to 0",
                               setting("verify", "tolerance", {"atol": -1})),
    "unknown_transform": Case("spec", "unknown transform 'nope'", rules({"from": "(.*)", "transform": "nope"})),
    "factory_not_allowed": Case("spec", "module 'os' is not under the catalogue's factory_modules",
                                factory("os:system")),
    "missing_meta": Case("spec", "source.meta: file not found", setting("source", "meta", "nowhere.meta")),
    "missing_checkpoint": Case("spec", "source.checkpoint: no checkpoint index nowhere.index beside this prefix",
                               setting("source", "checkpoint", "nowhere")),
    "shared_export_a": Case("spec", "export.dir: also the export folder of", export_dir("shared")),
    "shared_export_b": Case("spec", "export.dir: also the export folder of", export_dir("shared")),
    # the architecture, as `ferry validate` would say it
    "unknown_layer": Case("reconstruct", "architecture.layers[0]: unknown Keras layer class 'Dence' (got 'Dence')",
                          layers({"class": "Dence", "units": 1})),
    "bad_layer_argument": Case("reconstruct", "architecture.layers[0]: Dense(units=1, activation='nonsense')",
                               layers({"class": "Dense", "units": 1, "activation": "nonsense"})),
    # the TF1 artifacts
    "meta_not_a_graph": Case("inspect", "model.meta is not a MetaGraphDef (.meta) file", not_a_graph),
    "output_not_in_graph": Case("inspect", "source.outputs.y: no op 'nope' in the graph's inference part",
                                setting("source", "outputs", {"y": "nope:0"})),
    "checkpoint_of_another_model": Case("restore", "does not belong to the graph model.ckpt.meta: only 0 of its 2 "
                                        "variables are in it", checkpoint_of("mlp")),
    "truncated_checkpoint": Case("restore", "its .data file is truncated or corrupt", truncated_checkpoint),
    # the name map
    "rule_matches_nothing": Case("restore", "rules[1] 'nothing/here': matches no checkpoint key",
                                 rules({"from": "(.*)"}, {"from": "nothing/here"})),
    "transform_wrong_shape": Case("restore", "transform 'reshape': sources [1, 1] -> targets [1, 1]: expected the "
                                  "same number of elements", rules({"from": "dense/kernel", "transform":
                                                                   {"reshape": {"shape": [3]}}},
                                                                   {"from": "dense/bias"})),
    "strict_unassigned": Case("restore", "strict name map: 1 of 2 model weights unassigned",
                              rules({"from": "dense/kernel"})),
    # the other formats
    "saved_model_without_the_tag": Case("inspect", "no MetaGraph tagged 'train' (source.tag); tag sets present: "
                                        "[['serve']]", source(saved_model="../../zoo/savedmodel_mlp/savedmodel",
                                                              tag="train")),
    "saved_model_without_the_signature": Case(
        "inspect", "no signature 'predict' (source.signature) under tag 'serve'; signatures present: "
        "['serving_default']", source(saved_model="../../zoo/savedmodel_mlp/savedmodel", signature="predict")),
    "saved_model_folder_without_the_model": Case("spec", "no saved_model.pb in the folder (it holds ",
                                                 source(saved_model="../../zoo/savedmodel_mlp/savedmodel/variables")),
    "frozen_graph_without_the_output": Case("inspect", "source.outputs.y: no op 'nope' in the graph's inference part",
                                            source(frozen_graph="../../zoo/frozen_cnn/frozen.pb",
                                                   inputs={"x": "images:0"}, outputs={"y": "nope:0"})),
    "frozen_graph_truncated": Case("inspect", "frozen.pb is not a GraphDef (.pb) file (truncated or another format)",
                                   source(frozen_graph=truncated_pb, inputs={"x": "images:0"},
                                          outputs={"y": "probs:0"})),
    "estimator_dir_without_a_checkpoint": Case(
        "spec", "no `checkpoint` state file in ", source(estimator_dir=estimator_without_state,
                                                          inputs={"x": "IteratorGetNext:0"},
                                                          outputs={"y": "dnn/logits/BiasAdd:0"})),
    "estimator_dir_without_that_checkpoint": Case(
        "spec", "no checkpoint 'model.ckpt-7' in ", source(estimator_dir="../../zoo/estimator_dnn/model_dir",
                                                           checkpoint="model.ckpt-7", inputs={"x": "IteratorGetNext:0"},
                                                           outputs={"y": "dnn/logits/BiasAdd:0"})),
    "two_formats_at_once": Case("spec", "source: needs exactly one of `meta`, `frozen_graph`, `saved_model`, "
                                "`estimator_dir` (got ['meta', 'frozen_graph'])",
                                source(meta="../../zoo/linear/model.ckpt.meta",
                                       frozen_graph="../../zoo/frozen_cnn/frozen.pb",
                                       inputs={"x": "x:0"}, outputs={"y": "y:0"})),
    "frozen_graph_without_inputs": Case("spec", "source.inputs: Field required: a frozen_graph source names its "
                                        "serving inputs",
                                        source(frozen_graph="../../zoo/frozen_cnn/frozen.pb",
                                               outputs={"y": "probs:0"})),
    # the export folder
    "export_into_users_folder": Case("export", "export.dir: ", users_folder),
    "export_onto_a_file": Case("export", "is a file, not a folder", a_file),
}
UNSAFE_YAML = "name: unsafe_yaml\nsource: !!python/object/apply:os.system ['echo owned']\n"


@pytest.fixture(scope="module")
def broken(tmp_path_factory, zoo, prefect_harness):
    """One catalogue run over `linear` (passes) and every broken variant of it (each fails)."""
    root = tmp_path_factory.mktemp("faults")
    shutil.copytree(REPO / "specs", root / "specs")
    (root / "zoo").symlink_to(zoo, target_is_directory=True)
    catalogue = root / "specs" / "catalogue.yaml"
    keep_models(catalogue, ["linear"])
    models = catalogue.parent / "models"
    base = yaml.safe_load((models / "linear.yaml").read_text())
    for name, case in CASES.items():
        spec = json.loads(json.dumps(base))
        spec.update(name=name, export={"dir": f"../../exports/{name}"})
        folder = root / "cases" / name
        folder.mkdir(parents=True)
        case.change(spec, folder)
        (models / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (models / "unsafe_yaml.yaml").write_text(UNSAFE_YAML)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        with pytest.raises(CatalogueFailed) as failed:
            migrate_catalogue(str(catalogue))
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ferry-examples").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    return root, {r["model"]: r for r in failed.value.rows}, runs, client


def assert_nothing_left(root: Path, model: str, runs: dict, client: MlflowClient) -> None:
    """No export (complete or temporary), no temporary file in the work folder, a FAILED run, no registration."""
    exports = root / "exports"
    assert not exports.exists() or not [p.name for p in exports.iterdir() if p.name.lstrip(".").startswith(model)]
    work = root / ".ferry" / "work" / model
    assert not list(work.glob(".*.tmp*")) if work.exists() else True
    assert not (work / "restored.weights.h5").exists() or runs[model].data.tags["failed_stage"] in ("verify", "export")
    assert runs[model].info.status == "FAILED" and runs[model].data.tags["status"] == "failed"
    assert not client.search_model_versions(f"name='{model}'")


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(CASES))
def test_broken_model_fails_at_its_stage_with_a_message_and_leaves_nothing(broken, name):
    root, rows, runs, client = broken
    case = CASES[name]
    row = rows[name]
    assert (row["status"], row["failed_stage"]) == ("failed", case.stage), row["error"]
    error = runs[name].data.tags["error"]  # the whole message (the summary row keeps its start)
    assert case.message in error and "Traceback" not in error
    assert row["error"][:200] in error  # the summary row shows its start
    assert_nothing_left(root, name, runs, client)


@pytest.mark.e2e
def test_unsafe_yaml_is_refused_and_nothing_runs(broken):
    root, rows, runs, client = broken
    assert rows["unsafe_yaml"]["failed_stage"] == "spec"
    assert "unsafe_yaml.yaml: invalid YAML: could not determine a constructor for the tag " \
           "'tag:yaml.org,2002:python/object/apply:os.system'" in runs["unsafe_yaml"].data.tags["error"]
    assert_nothing_left(root, "unsafe_yaml", runs, client)


@pytest.mark.e2e
def test_a_users_folder_named_as_export_dir_is_left_as_it_was(broken):
    root, rows, runs, client = broken
    mine = root / "cases" / "export_into_users_folder" / "mine"
    assert "holds files that are not a ferry export (notes.txt, sub/data.csv)" in runs[
        "export_into_users_folder"].data.tags["error"]
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == ["notes.txt", "sub", "sub/data.csv"]
    assert (mine / "notes.txt").read_text() == "keep me"
    assert [p.name for p in mine.parent.iterdir()] == ["mine"]  # no temporary export beside it
    assert (root / "cases" / "export_onto_a_file" / "model.out").read_text() == "not a folder"


@pytest.mark.e2e
def test_the_good_model_beside_them_passes_and_is_handed_over(broken):
    root, rows, runs, client = broken
    assert rows["linear"]["status"] == "passed" and rows["linear"]["coverage"] == 1.0
    assert (root / "exports" / "linear" / "saved_model.pb").exists()
    for path in [root / "exports" / "linear", *(root / "exports" / "linear").rglob("*")]:  # others may read it
        assert path.stat().st_mode & 0o044 == 0o044, path
    assert runs["linear"].info.status == "FINISHED"
    assert int(client.get_model_version_by_alias("linear", "migrated").version) == 1


@pytest.mark.tf1
def test_a_typo_in_the_catalogue_defaults_is_reported_once_against_the_catalogue(catalogue, capsys):
    edit_yaml(catalogue, lambda c: c["defaults"]["verify"].update(batchsize=8))
    with pytest.raises(SpecError) as info:
        load_catalogue(catalogue)
    assert [str(p) for p in info.value.problems] == [
        f"{catalogue}: defaults.verify.batchsize: unknown key (got 8)"]
    assert main(["validate", str(catalogue)]) == 2
    err = capsys.readouterr().err
    assert err.count("batchsize") == 1 and "models/" not in err
    assert main(["run", str(catalogue)]) == 2  # before any Prefect server is started
    assert capsys.readouterr().err.count("defaults.verify.batchsize: unknown key") == 1


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_a_relative_sqlite_tracking_uri_is_the_working_folders(catalogue, tmp_path, monkeypatch):
    keep_models(catalogue, ["linear"])
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///alt.db")
    rows = migrate_catalogue(str(catalogue))
    assert [r["status"] for r in rows] == ["passed"]
    client = MlflowClient(f"sqlite:///{here / 'alt.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ferry-examples").experiment_id])
    assert {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId")} == {"linear"}
    assert (here / "mlartifacts").is_dir()  # artifacts beside the store, not in the catalogue's folder

    # and `ferry relog` takes a relative URI the same way (a journal written while MLflow was unreachable)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    journal_id = migrate_catalogue(str(catalogue))[0]["tracking"].split("`ferry relog ")[1].rstrip("`")
    assert main(["relog", journal_id, "--catalogue", str(catalogue), "--tracking-uri", "sqlite:///relog.db"]) == 0
    relogged = MlflowClient(f"sqlite:///{here / 'relog.db'}")
    assert len(relogged.search_runs([relogged.get_experiment_by_name("ferry-examples").experiment_id])) == 2


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_a_cached_rerun_after_a_failed_attempt_reports_the_cached_numbers(catalogue):
    """A failed restore (a name map leaving a weight out) overwrote the mapping report; after the revert, the
    rerun must not report that attempt's 50 % coverage for the restore it took from the cache."""
    keep_models(catalogue, ["linear"])
    spec = catalogue.parent / "models" / "linear.yaml"
    original = spec.read_text()
    assert migrate_catalogue(str(catalogue))[0]["coverage"] == 1.0
    edit_yaml(spec, lambda s: s["name_map"].update(rules=[{"from": "dense/kernel"}]))  # half the weights
    with pytest.raises(CatalogueFailed):
        migrate_catalogue(str(catalogue))
    spec.write_text(original)
    [row] = migrate_catalogue(str(catalogue))
    assert (row["status"], row["coverage"]) == ("passed", 1.0)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("ferry-examples").experiment_id],
                              "tags.`mlflow.runName` = 'linear'", order_by=["attributes.start_time DESC"])
    assert runs[0].data.metrics["coverage.model_weights"] == 1.0
    assert runs[0].data.tags["status"] == "passed"


# -- the command line, in processes of its own (a temporary Prefect server each, as a user gets) ------------


def ferry(root: Path, *args: str, background: bool = False, module: str | None = "ferry.cli", **env: str):
    """`ferry ARGS` (`python -m ferry.cli`; `module=None`: `python ARGS`) in the project at `root`, with the
    Prefect home `root/prefect-home` and none of our PREFECT_* settings, MLflow in `root/mlflow.db`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environment.update(PREFECT_HOME=str(root / "prefect-home"), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
                       PYTHONPATH=str(REPO), **env)
    command = [sys.executable, *(["-m", module] if module else []), *args]
    if background:
        return subprocess.Popen(command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True, timeout=900)


@pytest.fixture
def project(tmp_path, zoo) -> Path:
    """A project folder with the example catalogue (linear and mlp) and the zoo, for `ferry` processes."""
    shutil.copytree(REPO / "specs", tmp_path / "specs")
    (tmp_path / "zoo").symlink_to(zoo, target_is_directory=True)
    keep_models(tmp_path / "specs" / "catalogue.yaml", ["linear", "mlp"])
    return tmp_path


@pytest.fixture(scope="module")
def used_prefect_home(tmp_path_factory) -> Path:
    """A Prefect home as on any machine used before: the first `ferry` process's temporary server created its
    database (the slow first start, a minute or more on a busy machine), saying so in one line and nothing else.
    `used_project` copies it: each `ferry` process still starts a temporary server of its own."""
    root = tmp_path_factory.mktemp("first-start")
    done = ferry(root, "-c", "import ferry; from ferry.prefect_api import ensure_api; ensure_api()", module=None)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert (root / "prefect-home" / "prefect.db").is_file()
    [line] = out.strip().splitlines()  # the first start prints nothing but ferry's line either
    assert line.startswith("ferry: starting Prefect's temporary server (no PREFECT_API_URL set) ... up in "), out
    return root / "prefect-home"


@pytest.fixture
def used_project(project, used_prefect_home) -> Path:
    """`project` with a copy of the used Prefect home (its server not running: files only)."""
    shutil.copytree(used_prefect_home, project / "prefect-home")
    return project


@pytest.mark.e2e
def test_an_unreachable_prefect_api_is_one_line_of_advice(project):
    done = ferry(project, "run", "--only", "linear", PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
    assert done.returncode == 2
    assert "ferry: cannot reach the Prefect API at http://127.0.0.1:" in done.stderr
    assert "prefect server start" in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert len((done.stderr + done.stdout).strip().splitlines()) == 1
    assert not (project / "exports").exists() and not (project / ".ferry" / "work").exists()


@pytest.mark.e2e
def test_a_prefect_server_too_slow_to_start_ends_with_what_to_do(project):
    done = ferry(project, "run", "--only", "linear", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Prefect's temporary server did not start within 1 s" in done.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=1200" in done.stderr
    assert "prefect server start" in done.stderr and "Traceback" not in done.stderr
    assert not (project / "exports").exists()


@pytest.mark.e2e
def test_a_failing_run_prints_no_traceback_and_starts_prefect_in_one_line(used_project):
    project = used_project  # a first start's own output: used_prefect_home
    edit_yaml(project / "specs" / "models" / "mlp.yaml", lambda s: s["name_map"]["rules"][0].update(to="nope/\\2"))
    done = ferry(project, "run")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out and "NoneType: None" not in out
    assert "ferry: 1 of 2 models failed: mlp at restore" in done.stderr
    [start] = [line for line in out.splitlines() if "Prefect" in line and "temporary server" in line]
    assert start.startswith("ferry: starting Prefect's temporary server (no PREFECT_API_URL set) ... up in ")
    assert len(out.splitlines()) < 40, out  # was 311 lines
    assert sorted(p.name for p in (project / "exports").iterdir()) == ["linear"]


@pytest.mark.e2e
def test_two_runs_of_one_catalogue_at_once_both_end_correct(used_project):
    """Two `ferry run`s started together once tore the restored weights file (a zeroed first layer) and
    cached it; now a model is migrated by one run at a time, and the other takes its results."""
    # the Prefect home exists already, as on any machine used before (two first-ever starts at once would
    # both create its database)
    project = used_project
    first = ferry(project, "run", background=True)
    second = ferry(project, "run", background=True)
    outs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], "\n\n".join(outs)
    assert any("waiting for another run of this model" in out for out in outs)
    # a third run recomputes verification from whatever weights the two left: they must be right
    done = ferry(project, "run", "--force", "--stage", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ferry-examples").experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == 9  # three catalogue runs of two models each
    assert not list((project / ".ferry" / "work").glob("*/.*.tmp*"))


@pytest.mark.e2e
def test_a_killed_run_is_closed_by_the_next_one_which_cleans_up_after_it(used_project):
    """kill -9 during the export: the rerun marks the MLflow runs KILLED and the Prefect flow run Crashed,
    removes the temporary SavedModel copy, and migrates the model."""
    project = used_project
    keep_models(project / "specs" / "catalogue.yaml", ["linear"])
    run = ferry(project, "run", background=True)
    exports = project / "exports"
    deadline = time.monotonic() + 600
    while not list(exports.glob(".linear.tmp-*")):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert list(exports.glob(".linear.tmp-*"))  # what the killed run left
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ferry-examples").experiment_id
    left = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert len(left) == 2  # the catalogue run and the model run
    [flow_run_id] = {r.data.tags["prefect.flow_run_id"] for r in left if "prefect.flow_run_id" in r.data.tags}

    done = ferry(project, "run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "was left RUNNING by process" in done.stdout + done.stderr
    for old in left:
        closed = client.get_run(old.info.run_id)
        assert closed.info.status == "KILLED"
        assert "ended without closing this run" in closed.data.tags["ferry.abandoned"]
    with sqlite3.connect(project / "prefect-home" / "prefect.db") as db:
        [(state,)] = db.execute("select state_type from flow_run where id = ?", (flow_run_id,)).fetchall()
    assert state == "CRASHED"
    assert not list(exports.glob(".linear.*")) and (exports / "linear" / "saved_model.pb").exists()
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")


# -- `auto` on code nobody here wrote ----------------------------------------------------------------------


@pytest.mark.tf1
def test_auto_converts_google_bert_and_its_keras_reloads_on_jax(tmp_path):
    """bert-tensorflow's own modeling.py (shapes computed at run time by `get_shape_list`, einsum dense layers,
    one-hot token types, a sliced position table, tf_slim's layer norm, tanh GELU) converts with
    `architecture: auto`: every output of every shard matches at 1e-5, and the exported `.keras` (portable)
    reloads with parity, on JAX too."""
    from test_auto_array import case_spec
    from test_export import LOAD_KERAS, keras_job, reference_npz, run_python

    from ferry.stages import WorkDir
    from tasks.export import export_savedmodel
    from tasks.inspect import inspect_graph
    from tasks.reconstruct import reconstruct
    from tasks.restore import restore_weights
    from tasks.verify import verify_shard_records

    run_tf1_script(TF1_BUILDERS / "bert_tiny.py", tmp_path)
    spec = case_spec(tmp_path / "bert_tiny", tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    reconstructed = reconstruct(spec, inspected)
    restored = restore_weights(spec, reconstructed, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    errors = {}
    for i, shard in enumerate(spec.shard_paths()):
        record = verify_shard_records(spec, reconstructed, restored, shard, i)
        assert set(record["outputs"]) == {"pooled", "sequence", "probs"}
        assert all(out["passed"] for out in record["outputs"].values()), record["outputs"]
        errors[i] = {name: out["max_abs_err"] for name, out in record["outputs"].items()}
    print("max abs errors per shard:", errors)

    exported = export_savedmodel(spec, reconstructed, restored, spec.shard_paths()[0])  # reloads, rechecks
    assert exported["keras"]["portable"] and exported["keras"]["custom_layers"] == ["ferry.keras3.layers.Weight"]
    job = keras_job(spec, exported, reference_npz(spec, tmp_path / "reference.npz"))
    loaded = run_python(LOAD_KERAS, json.dumps([job]), cwd=tmp_path, KERAS_BACKEND="jax")
    assert loaded["backend"] == "jax" and loaded["imported"] == ["ferry"]
    assert all(out["passed"] for out in loaded["results"]["bert_tiny"].values()), loaded["results"]


@pytest.mark.unit
def test_auto_names_a_node_of_the_graph_for_everything_it_cannot_translate():
    """Odd graphs: an input of unknown rank, and one that a handler does not foresee. Each is reported against a
    node of the graph, at once, and no raw exception escapes. (An output whose length depends on the data, a
    string op, and the forms handlers refuse -- a reshape to a shape computed at run time, a concat on a
    non-constant axis -- run as raw TF ops, `ferry.RawOp`.)"""
    import tensorflow as tf

    from ferry.tf1.auto import UnsupportedGraph, translate

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        text = v1.placeholder(tf.string, [None], name="text")
        anything = v1.placeholder(tf.float32, None, name="anything")
        outputs = {"doubled": tf.reshape(x, tf.stack([tf.shape(x)[0] * 2, -1])), "where": tf.where(x > 0.5),
                   "concat": tf.concat([x, x], axis=tf.cast(x[0, 0], tf.int32)), "length": tf.strings.length(text),
                   "cumsum": tf.math.cumsum(anything, axis=1)}
        outputs = {name: tf.identity(t, name=name).name for name, t in outputs.items()}
    with pytest.raises(UnsupportedGraph) as info:
        translate(graph, {"x": "x:0", "text": "text:0", "anything": "anything:0"}, outputs, "odd")
    found = info.value.found
    for op_type, node in found.items():
        graph.get_operation_by_name(node)  # a node of the graph, whatever failed
        assert f"{op_type} (e.g. {node})" in str(info.value)
    assert not {"Where", "StringLength", "Reshape", "Mul", "ConcatV2", "non-constant axis"} & {
        t.split("(")[0] for t in found}, found  # run as raw TF ops
    assert found["input of unknown rank (give the placeholder a shape)"] == "anything"
    [raw] = [t for t in found if t.startswith("Cumsum(translation failed, TypeError")]  # unforeseen, at its node
    assert graph.get_operation_by_name(found[raw]).type == "Cumsum"
