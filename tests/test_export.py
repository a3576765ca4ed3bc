"""The export stage's hand-over: a SavedModel and a Keras 3 `<name>.keras` in one folder with a marker,
both re-checked; the `.keras` reloads without ferry and, when portable, on JAX; and the export folder's
safety rules (what may be replaced, file modes, stale temporary folders). Real stages on real TF1
checkpoints; loading happens in subprocesses that import what a user's would."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import numpy as np
import pytest
from conftest import REPO, artifact_paths, restore_stages, spec_of
from mlflow.tracking import MlflowClient
from test_auto import ZOO, auto_spec, draft

import ferry
from ferry.export_dir import MARKER, ExportDirError, read_marker, temp_folder_name
from ferry.review.registry import load_migrated
from ferry.shards import load_shard
from ferry.spec import Export
from ferry.tf1.session import run_tf1
from flows.migrate import CatalogueFailed, migrate_catalogue
from tasks.export import call_savedmodel, export_savedmodel

SAVEDMODEL = {"assets", "fingerprint.pb", "saved_model.pb", "variables"}


def export(spec, work: Path, dest: Path | None = None) -> dict:
    """The export stage of `spec` (to `dest` instead of its export.dir if given)."""
    if dest is not None:
        spec = spec.model_copy(update={"export": Export(dir=dest)})
    info, restored = restore_stages(spec, work)
    return export_savedmodel(spec, info, restored, spec.shard_paths()[0])


def run_python(code: str, *args: str, cwd: Path, **env: str) -> dict:
    """Run `code` in a fresh interpreter (nothing of ferry imported unless it imports it); its last
    stdout line is JSON."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **env})
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_npz(spec, path: Path) -> Path:
    """A shard's inputs and the TF1 graph's outputs on it, for a process that must not run TF1."""
    arrays = load_shard(spec, spec.shard_paths()[0])
    outputs = run_tf1(spec, arrays, spec.verify.batch_size, "/CPU:0")
    np.savez(path, **{f"in.{k}": v for k, v in arrays.items()}, **{f"out.{k}": v for k, v in outputs.items()})
    return path


# Loads `.keras` files with Keras alone and compares them with the TF1 outputs of `reference_npz`.
# argv[1]: JSON list of {"name", "keras", "npz", "batch_size", "tolerance": {output: [atol, rtol]},
# "custom_layers"}; ferry's layers are imported only when a model needs them, after checking it does.
LOAD_KERAS = """
import json, sys
import numpy as np
import keras

results = {}
for job in json.loads(sys.argv[1]):
    if job["custom_layers"] and "ferry.keras3.layers" not in sys.modules:
        try:
            keras.saving.load_model(job["keras"])
            results["loads_without_ferry"] = job["name"]
        except TypeError as exc:
            assert "Could not locate class" in str(exc), exc
        import ferry.keras3.layers  # noqa: F401
    model = keras.saving.load_model(job["keras"])
    with np.load(job["npz"]) as data:
        inputs = [data[k] for k in data.files if k.startswith("in.")]
        want = {k[4:]: data[k] for k in data.files if k.startswith("out.")}
    got = model.predict(inputs[0] if len(inputs) == 1 else inputs, batch_size=job["batch_size"], verbose=0)
    got = dict(zip(want, got if isinstance(got, list) else [got]))
    results[job["name"]] = {
        name: {"max_abs_err": float(np.abs(np.asarray(got[name], np.float64) - want[name]).max()),
               "passed": bool(np.allclose(got[name], want[name], atol=atol, rtol=rtol))}
        for name, (atol, rtol) in job["tolerance"].items()}
print(json.dumps({"backend": keras.backend.backend(), "results": results,
                  "imported": sorted(m for m in ("ferry", "tensorflow") if m in sys.modules)}))
"""


def keras_job(spec, exported: dict, npz: Path) -> dict:
    return {"name": spec.name, "keras": exported["keras"]["path"], "npz": str(npz),
            "batch_size": spec.verify.batch_size, "custom_layers": exported["keras"]["custom_layers"],
            "tolerance": {name: [spec.verify.tolerance_for(name).atol, spec.verify.tolerance_for(name).rtol]
                          for name in spec.source.outputs}}


@pytest.mark.tf1
def test_export_folder_holds_savedmodel_keras_and_marker(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    exported = export(spec, tmp_path / "work")
    dest = Path(spec.export.dir)
    assert exported["path"] == str(dest)
    assert {p.name for p in dest.iterdir()} == SAVEDMODEL | {"mlp.keras", MARKER}
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    keras_record = exported["keras"]
    assert keras_record["path"] == str(dest / "mlp.keras") and keras_record["file"] == "mlp.keras"
    assert (keras_record["portable"], keras_record["custom_layers"], keras_record["non_portable"]) == (True, [], [])
    assert keras_record["outputs"]["probs"]["passed"] and keras_record["outputs"]["probs"]["max_abs_err"] == 0.0
    json.dumps(exported)  # a small JSON-able record
    assert read_marker(dest) == {"model": "mlp", "spec_file": str(spec.spec_file), "ferry_version": ferry.__version__,
                                 "savedmodel": {"signature": "serving_default", "inputs": ["x"], "outputs": ["probs"]},
                                 "keras": {k: keras_record[k] for k in ("file", "portable", "custom_layers",
                                                                        "non_portable")}}

    # A model of plain Keras layers loads with Keras alone (no ferry import) and reproduces the TF1 graph.
    npz = reference_npz(spec, tmp_path / "mlp.npz")
    loaded = run_python(LOAD_KERAS, json.dumps([keras_job(spec, exported, npz)]), cwd=tmp_path)
    assert loaded["backend"] == "tensorflow" and "ferry" not in loaded["imported"]
    assert loaded["results"]["mlp"]["probs"]["passed"], loaded

    # Rerun: the model's own export is replaced.
    (dest / "mlp.keras").unlink()
    export(spec, tmp_path / "work")
    assert (dest / "mlp.keras").is_file() and read_marker(dest)["model"] == "mlp"


def readme_snippet(marker: str) -> str:
    """The README's Python block of the hand-over section that contains `marker`."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The hand-over: SavedModel and Keras model"):readme.index("## Benchmarks")]
    [code] = [block for block in re.findall(r"```python\n(.*?)```", section, re.S) if marker in block]
    return code


@pytest.mark.tf1
def test_readme_fine_tuning_snippet_runs(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    export(spec, tmp_path / "work")
    project = catalogue.parent.parent  # exports/ and zoo/ as in the snippet
    check = ("\nimport json\n"
             "before = keras.saving.load_model('exports/mlp/mlp.keras').get_weights()\n"
             "after = keras.saving.load_model('mlp-finetuned.keras').get_weights()\n"
             "print(json.dumps({'loss': float(loss), 'changed': sum(not np.array_equal(a, b) "
             "for a, b in zip(before, after)), 'weights': len(after), 'ferry': 'ferry' in sys.modules}))\n")
    done = run_python("import sys\n" + readme_snippet("train_on_batch") + check, cwd=project)
    assert np.isfinite(done["loss"]) and done["changed"] == done["weights"] == 6  # one step moved every weight
    assert done["ferry"] is False


@pytest.mark.tf1
def test_auto_zoo_keras_models_are_portable_and_match_tf1_on_jax(zoo, tmp_path):
    jobs, exported = [], {}
    for name in ZOO:
        spec = auto_spec(draft(zoo / name / "model.ckpt.meta", tmp_path, name), tmp_path)
        exported[name] = export(spec, tmp_path / "work" / name)
        jobs.append(keras_job(spec, exported[name], reference_npz(spec, tmp_path / f"{name}.npz")))
    # auto emits Keras layers, keras.ops calls, ferry.Weight (transformer's hand-written layer norm and
    # position table) and ferry.TF1BatchNormalization (resnet_bn's batch norm): all backend-neutral.
    assert {n: e["keras"]["portable"] for n, e in exported.items()} == {n: True for n in ZOO}
    assert {n: e["keras"]["custom_layers"] for n, e in exported.items() if e["keras"]["custom_layers"]} == {
        "resnet_bn": ["ferry.keras3.layers.TF1BatchNormalization"], "transformer": ["ferry.keras3.layers.Weight"]}

    loaded = run_python(LOAD_KERAS, json.dumps(jobs), cwd=tmp_path, KERAS_BACKEND="jax")
    assert loaded["backend"] == "jax"
    assert loaded["imported"] == ["ferry"]  # ferry.keras3.layers for transformer; TensorFlow never
    assert "loads_without_ferry" not in loaded["results"]  # resnet_bn needs `import ferry.keras3.layers`
    failed = {name: out for name in ZOO for out in loaded["results"][name].values() if not out["passed"]}
    assert not failed, loaded["results"]
    print({name: {k: v["max_abs_err"] for k, v in loaded["results"][name].items()} for name in ZOO})


FACTORIES = '''
import keras


class Scale(keras.layers.Layer):  # not registered: a .keras file cannot name it
    def __init__(self, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor


@keras.saving.register_keras_serializable(package="broken")
class LossyScale(Scale):  # registered, but its config forgets `factor`: it reloads as 1.0
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}


def unregistered(inputs, factor):
    return Scale(factor, name="scale")(keras.layers.Dense(1, name="dense")(inputs["x"]))


def lossy(inputs, factor):
    return LossyScale(factor, name="scale")(keras.layers.Dense(1, name="dense")(inputs["x"]))
'''


@pytest.mark.tf1
@pytest.mark.parametrize("function, message", [
    ("unregistered", "architecture.factory: the Keras model does not save and reload as linear_unregistered.keras: "
                     "TypeError: .*Could not locate class 'Scale'.*register_keras_serializable"),
    ("lossy", r"export: the reloaded linear_lossy.keras differs from the Keras model on \S*shard-000.npz "
              r"\(verify.tolerance\): \{'y': \{'passed': False.*nothing was exported to "),
])
def test_keras_that_does_not_reload_the_same_fails_export_and_leaves_nothing(catalogue, tmp_path, function, message):
    # A module of its own (not under `factories`, which another catalogue copy may have imported already).
    (catalogue.parent / "broken_layers.py").write_text(FACTORIES)
    catalogue.write_text(catalogue.read_text().replace("factory_modules: [factories]",
                                                       "factory_modules: [factories, broken_layers]"))
    linear = catalogue.parent / "models" / "linear.yaml"
    spec_file = linear.with_name(f"linear_{function}.yaml")
    spec_file.write_text(re.sub(r"  layers:\n    - \{class: Dense, units: 1\}.*\n",
                                f"  factory: {{function: 'broken_layers:{function}', kwargs: {{factor: 2.0}}}}\n",
                                linear.read_text().replace("name: linear", f"name: linear_{function}")
                                .replace("exports/linear", f"exports/linear_{function}")))
    spec = spec_of(catalogue, f"linear_{function}")
    assert spec.architecture.factory.function == f"broken_layers:{function}"
    with pytest.raises(ValueError, match=f"(?s)^{re.escape(str(spec_file))}: {message}"):
        export(spec, tmp_path / "work")
    exports = Path(spec.export.dir).parent
    assert not Path(spec.export.dir).exists()
    assert temp_folders(exports) == []


@pytest.mark.tf1
def test_factory_layer_of_its_own_is_flagged_not_portable(catalogue, tmp_path):
    spec = spec_of(catalogue, "transformer")
    exported = export(spec, tmp_path / "work")
    keras_record = exported["keras"]
    assert keras_record["portable"] is False
    assert keras_record["custom_layers"] == keras_record["non_portable"] == ["factories.transformer.PositionEmbedding"]
    assert read_marker(Path(spec.export.dir))["keras"]["portable"] is False


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def temp_folders(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or p.name.endswith(".old"))


@pytest.mark.tf1
def test_foreign_folder_is_refused_and_left_untouched(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    dest = tmp_path / "exports" / "mlp"
    (dest / "sub").mkdir(parents=True)
    (dest / "notes.txt").write_text("my notes\n")
    (dest / "sub" / "data.csv").write_text("a,b\n1,2\n")
    before = tree(dest)
    with pytest.raises(ExportDirError) as err:
        export(spec, tmp_path / "work", dest)
    assert str(err.value) == (
        f"{spec.spec_file}: export.dir: {dest} holds files that are not a ferry export (notes.txt, sub/data.csv); "
        "ferry replaces only an empty folder or its own export of model 'mlp' (with ferry-export.json). "
        "Move them away or choose another export.dir")
    assert tree(dest) == before and temp_folders(dest.parent) == []


@pytest.mark.tf1
def test_file_and_other_models_export_are_refused(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    file = tmp_path / "exports" / "mlp"
    file.parent.mkdir()
    file.write_text("not a folder\n")
    with pytest.raises(ExportDirError, match=f"^{re.escape(str(spec.spec_file))}: export.dir: {re.escape(str(file))} "
                                             "is a file, not a folder"):
        export(spec, tmp_path / "work", file)
    assert file.read_text() == "not a folder\n" and temp_folders(file.parent) == []

    linear = tmp_path / "exports" / "linear"
    export(spec_of(catalogue, "linear"), tmp_path / "work-linear", linear)
    before = tree(linear)
    with pytest.raises(ExportDirError) as err:
        export(spec, tmp_path / "work", linear)
    assert str(err.value) == (f"{spec.spec_file}: export.dir: {linear} is the ferry export of model 'linear' (spec "
                              f"{spec_of(catalogue, 'linear').spec_file}), not of 'mlp'; give each model its own "
                              "export.dir")
    assert tree(linear) == before and temp_folders(linear.parent) == []

    empty = tmp_path / "exports" / "empty"
    empty.mkdir()
    export(spec, tmp_path / "work", empty)  # an empty folder is taken
    assert read_marker(empty)["model"] == "mlp"


@pytest.mark.tf1
def test_export_is_readable_as_the_umask_says(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    dest = tmp_path / "exports" / "mlp"
    old = os.umask(0o027)
    try:
        export(spec, tmp_path / "work", dest)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(dest)): stat.S_IMODE(p.stat().st_mode) for p in [dest, *dest.rglob("*")]}
    assert {"mlp.keras", MARKER, "saved_model.pb", "variables/variables.index"} <= set(modes)
    assert {p: m for p, m in modes.items() if m != (0o750 if (dest / p).is_dir() else 0o640)} == {}


@pytest.mark.tf1
def test_stale_temporary_folders_of_dead_processes_are_removed(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    dest = tmp_path / "exports" / "mlp"
    dest.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process now
    host = socket.gethostname()
    folders = {"dead": temp_folder_name(dest, host, dead.pid, "0badc0de"),
               "live": temp_folder_name(dest, host, os.getpid(), "00c0ffee"),
               "other host": temp_folder_name(dest, "elsewhere-01", dead.pid, "0ddba115"),
               "other model": temp_folder_name(dest.with_name("linear"), host, dead.pid, "deadbeef")}
    for name in folders.values():
        (dest.parent / name / "variables").mkdir(parents=True)
        (dest.parent / name / "saved_model.pb").write_bytes(b"a complete copy, once")
    export(spec, tmp_path / "work", dest)
    left = set(temp_folders(dest.parent))
    assert folders["dead"] not in left
    assert left == {folders["live"], folders["other host"], folders["other model"]}
    assert read_marker(dest)["model"] == "mlp"


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_flow_logs_keras_artifact_portability_and_registers_it(catalogue):
    foreign = catalogue.parent.parent / "exports" / "linear"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(CatalogueFailed) as failed:
        migrate_catalogue(str(catalogue), only=["linear", "mlp", "transformer"])
    rows = {r["model"]: r for r in failed.value.rows}
    assert (rows["linear"]["status"], rows["linear"]["failed_stage"]) == ("failed", "export")
    assert "export.dir" in rows["linear"]["error"] and "notes.txt" in rows["linear"]["error"]
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    assert rows["mlp"]["status"] == rows["transformer"]["status"] == "passed"

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ferry-examples").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags}
    for name, portable in (("mlp", "true"), ("transformer", "false")):
        run = runs[name]
        artifacts = artifact_paths(client, run.info.run_id)
        assert {f"keras/{name}.keras", "savedmodel/saved_model.pb", "savedmodel/variables/variables.index"} <= artifacts
        assert not {f"savedmodel/{name}.keras", f"savedmodel/{MARKER}"} & artifacts
        assert run.data.tags["keras.portable"] == portable
        version = client.get_model_version_by_alias(name, "migrated")
        assert version.tags["keras.portable"] == portable
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version.version), tracking_uri=uri))
        files = {p.relative_to(local).as_posix() for p in local.rglob("*")}
        assert {f"artifacts/{name}.keras", f"artifacts/{name}/saved_model.pb"} <= files
        assert f"artifacts/{name}/{name}.keras" not in files
    assert runs["transformer"].data.tags["keras.non_portable"] == "factories.transformer.PositionEmbedding"
    spec = spec_of(catalogue, "mlp")
    arrays = load_shard(spec, spec.shard_paths()[0])
    np.testing.assert_array_equal(load_migrated("mlp", uri).predict(arrays)["probs"],
                                  call_savedmodel(spec, spec.export.dir, arrays)["probs"])

    # A cached rerun points at the run holding the files and still tags portability.
    migrate_catalogue(str(catalogue), only=["mlp"])
    [rerun] = [r for r in client.search_runs([experiment], "attributes.run_name = 'mlp'")
               if r.info.run_id != runs["mlp"].info.run_id]
    assert rerun.data.tags["cached_stages"] == "all"
    assert rerun.data.tags["savedmodel.run_id"] == runs["mlp"].info.run_id
    assert rerun.data.tags["keras.portable"] == "true"
    assert not {p for p in artifact_paths(client, rerun.info.run_id) if p.startswith(("keras", "savedmodel"))}
