"""When parity fails, the first divergent layer: three real TF1 models (written by TF1 APIs in their own
process) with specs broken on purpose, each localised to the layer at fault; `auto`'s own correspondence;
a spec without any; the record in the error, in parity.json and in MLflow; and nothing paid when parity
passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, artifact_paths, edit_yaml, restore_stages
from mlflow.tracking import MlflowClient

from ferry.divergence import align, describe, first_divergence
from ferry.parity import ParityError, VerificationFailed, judge
from ferry.spec import Tolerance, load_catalogue
from ferry.stages import WorkDir

TOL = Tolerance(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def project(tmp_path_factory, zoo, twin_mlp) -> Path:
    """`zoo/` (resnet_bn and text_lstm of the example zoo, twin_mlp: conftest's session builds by TF1 in their
    own processes; only read here) and `specs/` (the example catalogue with the specs of resnet_bn and text_lstm,
    and one for twin_mlp), for each test to copy."""
    root = tmp_path_factory.mktemp("divergence")
    (root / "zoo").mkdir()
    for name in ("resnet_bn", "text_lstm"):
        (root / "zoo" / name).symlink_to(zoo / name, target_is_directory=True)
    (root / "zoo" / "twin_mlp").symlink_to(twin_mlp, target_is_directory=True)
    (root / "specs" / "models").mkdir(parents=True)
    shutil.copy(REPO / "specs" / "catalogue.yaml", root / "specs")
    for name in ("resnet_bn", "text_lstm"):
        shutil.copy(REPO / "specs" / "models" / f"{name}.yaml", root / "specs" / "models")
    (root / "specs" / "models" / "twin_mlp.yaml").write_text(TWIN_SPEC)
    return root


TWIN_SPEC = """
name: twin_mlp
source:
  meta: ../../zoo/twin_mlp/model.ckpt.meta
  inputs: {x: "x:0"}
  outputs: {probs: "probs:0"}
architecture:
  layers:
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 4, activation: softmax}
name_map:
  rules: [{from: '(.*)'}]
verify:
  shards: ../../zoo/twin_mlp/shards/*.npz
export:
  dir: ../../exports/twin_mlp
"""


@pytest.fixture
def catalogue(project, tmp_path, monkeypatch) -> Path:
    """A private copy of the project's specs beside its zoo, with its own MLflow store."""
    shutil.copytree(project / "specs", tmp_path / "specs")
    (tmp_path / "zoo").symlink_to(project / "zoo", target_is_directory=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "specs" / "catalogue.yaml"


def edit(catalogue: Path, model: str, change) -> None:
    edit_yaml(catalogue.parent / "models" / f"{model}.yaml", change)


def transposed_dense_1(spec: dict) -> None:
    """The square kernel of `dense_1` restored transposed: shapes agree, restore cannot tell."""
    spec["name_map"]["rules"].insert(0, {"from": "dense_1/kernel", "to": "dense_1/kernel", "transform": "transpose"})


def failing_shard(catalogue: Path, model: str, tmp_path: Path, break_weights=None) -> tuple[dict, str]:
    """(the parity record, the error) of the model's first shard, which must fail verification."""
    from tasks.verify import verify_shard

    spec = load_catalogue(catalogue, only=[model]).specs[model]
    info, restored = restore_stages(spec, tmp_path / "work")
    if break_weights:
        restored = {**restored, "weights": break_weights(spec, info, restored, tmp_path)}
    with pytest.raises(ParityError) as failed:
        verify_shard(spec, info, restored, spec.shard_paths()[0], 0)
    return failed.value.record, str(failed.value)


def compared(record: dict) -> dict[str, dict]:
    return {row["layer"]: row for row in record["first_divergence"]["compared"]}


# --- the three broken specs ------------------------------------------------------------------------------


@pytest.mark.tf1
def test_a_wrong_batch_norm_epsilon_is_found_at_that_batch_norm(catalogue, tmp_path):
    def wrong_epsilon(spec: dict) -> None:  # the graph's block1/bn1 has epsilon 1e-5
        [node] = [n for n in spec["architecture"]["graph"]["nodes"] if n["name"] == "block1_bn1"]
        node["epsilon"] = 0.1

    edit(catalogue, "resnet_bn", wrong_epsilon)
    record, error = failing_shard(catalogue, "resnet_bn", tmp_path)
    found = record["first_divergence"]
    assert (found["layer"], found["correspondence"]) == ("block1_bn1", "name map")
    # the batch norm of the live (inference) branch of its `is_training` switch, not the training one
    assert (found["tf1"], found["tf1_op"]) == ("block1/bn1/cond/FusedBatchNormV3_1:0", "FusedBatchNormV3")
    assert found["max_abs_err"] > 1e-3
    assert list(found["inputs"]) == ["block1_conv1"] and found["inputs_max_abs_err"] <= 1e-5  # inputs fine
    assert "its inputs are within tolerance, its output is not" in found["verdict"]
    rows = compared(record)
    assert list(rows)[:4] == ["stem_conv", "stem_bn", "block1_conv1", "block1_bn1"]  # topological order
    assert all(rows[name]["within_tolerance"] for name in ("stem_conv", "stem_bn", "block1_conv1"))
    assert not rows["block1_conv2"]["within_tolerance"] and not rows["block1_conv2"]["inputs_within_tolerance"]
    assert found["not_compared"]["block1_relu1"] == "no weights: nothing ties it to a TF1 op"
    assert "first divergent layer: 'block1_bn1' (TF1 block1/bn1/cond/FusedBatchNormV3_1:0" in error


@pytest.mark.tf1
def test_a_missing_lstm_transform_is_found_at_the_lstm(catalogue, tmp_path):
    def without_lstm_transform(spec: dict) -> None:  # the kernel split, but no gate reorder and no forget bias
        spec["name_map"]["rules"][1:2] = [
            {"from": "rnn/lstm_cell/kernel", "to": ["lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel"],
             "transform": {"split": {"axis": 0}}},
            {"from": "rnn/lstm_cell/bias", "to": "lstm/lstm_cell/bias"}]

    edit(catalogue, "text_lstm", without_lstm_transform)
    record, error = failing_shard(catalogue, "text_lstm", tmp_path)
    found = record["first_divergence"]
    assert found["layer"] == "lstm"
    assert (found["tf1"], found["tf1_op"]) == ("rnn/transpose_1:0", "Transpose")  # dynamic_rnn's output sequence
    assert found["inputs"] == {"embedding": 0.0}
    rows = compared(record)
    assert list(rows) == ["embedding", "lstm", "logits"] and rows["embedding"]["within_tolerance"]
    assert rows["logits"]["tf1"] == "probs:0"  # Dense(activation=softmax): TF1's Softmax after its BiasAdd
    assert "first divergent layer: 'lstm'" in error


@pytest.mark.tf1
def test_a_transposed_dense_kernel_is_found_at_that_dense_not_after(catalogue, tmp_path):
    edit(catalogue, "twin_mlp", lambda spec: transposed_dense_1(spec))
    record, error = failing_shard(catalogue, "twin_mlp", tmp_path)
    found = record["first_divergence"]
    assert (found["layer"], found["tf1"], found["tf1_op"]) == ("dense_1", "dense_1/Relu:0", "Relu")
    assert found["inputs"] == {"dense": 0.0}
    rows = compared(record)
    assert [(name, row["within_tolerance"]) for name, row in rows.items()] == [
        ("dense", True), ("dense_1", False), ("dense_2", False), ("dense_3", False)]
    assert not rows["dense_2"]["inputs_within_tolerance"] and not rows["dense_3"]["inputs_within_tolerance"]
    assert found["rows"] == 8 and found["batch"] == 0 and found["output"] == "probs"
    assert error.index("first divergent layer: 'dense_1'") > error.index("out of tolerance")


@pytest.mark.tf1
def test_a_layer_without_counterpart_is_named_where_the_divergence_starts(catalogue, tmp_path):
    def tanh_for_relu(spec: dict) -> None:  # TF1 applies Relu after dense_1: no Tanh to compare with
        spec["architecture"]["layers"][1]["activation"] = "tanh"

    edit(catalogue, "twin_mlp", tanh_for_relu)
    record, _ = failing_shard(catalogue, "twin_mlp", tmp_path)
    found = record["first_divergence"]
    why = "Keras applies 'tanh' inside the layer; TF1 applies no single Tanh to dense_1/BiasAdd:0"
    assert found["not_compared"] == {"dense_1": why}
    assert found["layer"] == "dense_2" and found["inputs"]["dense_1"] > 1e-3  # its input is dense_1's output
    assert found["verdict"].endswith(f"the divergence starts before it, in ops without a TF1 counterpart: "
                                     f"dense_1 ({why})")


# --- correspondence: auto, and none ----------------------------------------------------------------------


@pytest.mark.tf1
def test_auto_records_its_tensors_and_finds_a_corrupted_layer(catalogue, tmp_path):
    from ferry.keras3.build import model_from_info, weight_paths

    edit(catalogue, "twin_mlp", lambda spec: spec.update(architecture="auto", name_map={}))

    def transpose_kernel(spec, info, restored, folder: Path) -> str:
        assert info["auto"]["tensors"]["dense_1"] == "dense_1/BiasAdd:0"  # recorded by the translation
        assert info["auto"]["tensors"]["dense_1.Relu"] == "dense_1/Relu:0"
        model = model_from_info(spec, info)
        model.load_weights(restored["weights"])
        kernel = weight_paths(model)["dense_1/kernel"]
        kernel.assign(kernel.numpy().T)
        model.save_weights(folder / "broken.weights.h5")
        return str(folder / "broken.weights.h5")

    record, _ = failing_shard(catalogue, "twin_mlp", tmp_path, transpose_kernel)
    found = record["first_divergence"]
    assert (found["layer"], found["correspondence"], found["tf1"]) == ("dense_1", "auto", "dense_1/BiasAdd:0")
    assert found["inputs"] == {"dense.Relu": 0.0}  # auto compares its `keras.ops` nodes too
    assert [r["layer"] for r in found["compared"]][:3] == ["dense", "dense.Relu", "dense_1"]


@pytest.mark.tf1
def test_a_spec_without_correspondence_says_so(catalogue, tmp_path):
    factories = catalogue.parent / "nested_factories"
    factories.mkdir()
    (factories / "__init__.py").write_text("")
    (factories / "mlp.py").write_text(
        "import keras\n\n\n"
        "def nested(inputs):\n"
        "    layers = [keras.layers.Dense(32, activation='relu', name=n) for n in ('dense', 'dense_1', 'dense_2')]\n"
        "    return keras.Sequential([*layers, keras.layers.Dense(4, activation='softmax', name='dense_3')],\n"
        "                            name='mlp')(inputs['x'])\n")
    edit_yaml(catalogue, lambda cat: cat.update(factory_modules=["nested_factories"]))

    def nested(spec: dict) -> None:
        spec["architecture"] = {"factory": {"function": "nested_factories.mlp:nested"}}
        spec["name_map"]["rules"] = [{"from": r"(.*)", "to": r"mlp/\1"}]
        transposed_dense_1(spec)
        spec["name_map"]["rules"][0]["to"] = "mlp/dense_1/kernel"

    edit(catalogue, "twin_mlp", nested)
    record, error = failing_shard(catalogue, "twin_mlp", tmp_path)
    found = record["first_divergence"]
    assert found["layer"] is None and found["compared"] == []
    assert found["not_compared"] == {"mlp": "a nested model (Sequential or subclassed): the outputs of its layers "
                                            "are not in the model's graph"}
    assert found["verdict"].startswith("no Keras layer could be matched to a TF1 tensor (mlp: a nested model")
    assert "first divergent layer: none found: no Keras layer could be matched" in error


@pytest.mark.tf1
def test_a_passing_model_computes_no_intermediates(catalogue, tmp_path, monkeypatch):
    import tasks.verify
    from ferry.tf1.session import Reference
    from tasks.verify import verify_shard

    calls = []
    monkeypatch.setattr(tasks.verify, "locate", lambda *args, **kwargs: calls.append("locate"))
    monkeypatch.setattr(Reference, "run_tensors", lambda *args, **kwargs: calls.append("run_tensors"))
    spec = load_catalogue(catalogue, only=["resnet_bn"]).specs["resnet_bn"]
    info, restored = restore_stages(spec, tmp_path / "work")
    for index, shard in enumerate(spec.shard_paths()):
        record = verify_shard(spec, info, restored, shard, index)
        assert record["passed"] and "first_divergence" not in record
    assert calls == []


# --- parity.json and MLflow ------------------------------------------------------------------------------


@pytest.mark.tf1
def test_parity_json_and_mlflow_carry_the_first_divergence(catalogue, tmp_path):
    from ferry.review.records import log_plots, log_stage_files
    from ferry.review.tracking import start_catalogue_run, start_model_run
    from tasks.verify import verify_shard_records

    edit(catalogue, "twin_mlp", lambda spec: transposed_dense_1(spec))
    spec = load_catalogue(catalogue, only=["twin_mlp"]).specs["twin_mlp"]
    work = WorkDir(tmp_path / "work")
    info, restored = restore_stages(spec, work.path)
    records = [verify_shard_records(spec, info, restored, shard, i, work) for i, shard in enumerate(spec.shard_paths())]
    with pytest.raises(VerificationFailed, match=r"^first divergent layer: 'dense_1' \(TF1 dense_1/Relu:0, Relu\)"):
        judge(records, [], work.parity)
    report = json.loads(work.parity.read_text())
    first = report["first_divergence"]
    assert (first["layer"], first["tf1"], first["tf1_op"], first["shard"]) == ("dense_1", "dense_1/Relu:0", "Relu", 0)
    assert first["max_abs_err"] > 1e-2 and first["inputs"] == {"dense": 0.0} and first["inputs_max_abs_err"] == 0.0
    assert all(s["first_divergence"]["layer"] == "dense_1" for s in report["shards"])  # every failing shard's own

    parent = start_catalogue_run(catalogue, "divergence-test", "catalogue run")
    run = start_model_run(parent, "twin_mlp", "divergence-test")
    log_stage_files(run, work, {"verify": 1.0})
    log_plots(run, spec, work, {"verify": 1.0})
    run.end(False)
    client = MlflowClient()
    assert client.get_run(run.run_id).data.tags["parity.first_divergence"] == "dense_1"
    assert {"parity.json", "first_divergence.json", "plots/divergence.png"} <= artifact_paths(client, run.run_id)
    table = json.loads(Path(client.download_artifacts(run.run_id, "first_divergence.json", str(tmp_path))).read_text())
    assert table["columns"] == ["keras_layer", "tf1_tensor", "tf1_op", "max_abs_err", "input_max_abs_err",
                                "within_tolerance"]
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert list(rows) == ["dense", "dense_1", "dense_2", "dense_3"]
    assert rows["dense_1"]["tf1_tensor"] == "dense_1/Relu:0" and rows["dense_1"]["input_max_abs_err"] == 0.0
    assert [rows[n]["within_tolerance"] for n in rows] == [True, False, False, False]


# --- the record itself (numpy only) ----------------------------------------------------------------------


def row(layer: str, err: float, inputs: dict[str, float | None]) -> dict:
    known = [e for e in inputs.values() if e is not None]
    return {"layer": layer, "tf1": f"{layer}/BiasAdd:0", "tf1_op": "BiasAdd", "max_abs_err": err,
            "within_tolerance": err <= 1e-5, "inputs": inputs,
            "inputs_max_abs_err": max(known) if len(known) == len(inputs) else None,
            "inputs_within_tolerance": None if len(known) < len(inputs) else all(e <= 1e-5 for e in known)}


@pytest.mark.unit
def test_the_first_out_of_tolerance_layer_is_the_divergence_and_its_inputs_tell_why():
    rows = [row("a", 1e-7, {"x": 0.0}), row("b", 0.3, {"a": 1e-7}), row("c", 0.5, {"b": 0.3})]
    found = first_divergence(rows, {}, output="y", shard=2, batch=1, n_rows=8, tol=TOL, correspondence="auto")
    assert (found["layer"], found["max_abs_err"], found["inputs_max_abs_err"]) == ("b", 0.3, 1e-7)
    assert "inputs are within tolerance" in found["verdict"]
    assert describe(found).startswith("first divergent layer: 'b' (TF1 b/BiasAdd:0, BiasAdd): max abs err 0.3")

    rows = [row("a", 1e-7, {"x": 0.0}), row("c", 0.5, {"relu": 0.2})]  # something uncompared went wrong before
    found = first_divergence(rows, {"relu": "no weights"}, output="y", shard=0, batch=0, n_rows=8, tol=TOL,
                             correspondence="name map")
    assert found["layer"] == "c" and "already out of tolerance (max abs err 0.2)" in found["verdict"]
    found = first_divergence([row("c", 0.5, {"?": None})], {}, output="y", shard=0, batch=0, n_rows=8, tol=TOL,
                             correspondence="name map")
    assert found["inputs_max_abs_err"] is None and "no TF1 counterpart" in found["verdict"]


@pytest.mark.unit
def test_no_divergent_layer_is_said_so():
    found = first_divergence([row("a", 1e-7, {"x": 0.0})], {"pool": "no weights"}, output="y", shard=0, batch=0,
                             n_rows=8, tol=TOL, correspondence="name map")
    assert found["layer"] is None and "within tolerance: the divergence is in layers or ops without" in found["verdict"]
    found = first_divergence([], {"m": "a nested model"}, output="y", shard=0, batch=0, n_rows=8, tol=TOL,
                             correspondence="name map")
    assert found["verdict"] == "no Keras layer could be matched to a TF1 tensor (m: a nested model)"
    assert describe(found) == "first divergent layer: none found: " + found["verdict"]


@pytest.mark.unit
def test_layouts_are_aligned_only_where_the_values_are_the_same():
    seq = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    assert np.array_equal(align(seq[:, -1], seq)[1], seq[:, -1])  # a recurrent layer's last step
    assert np.array_equal(align(seq, seq.reshape(10, 3))[1], seq)  # a TF1 tensordot's flattened rows
    nhwc, nchw = np.zeros((2, 4, 4, 3)), np.zeros((2, 3, 4, 4))  # another layout: not guessed
    assert align(nhwc, nchw) == "shapes differ: Keras [2, 4, 4, 3], TF1 [2, 3, 4, 4]"


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_a_catalogue_run_names_the_first_divergent_layer_everywhere(catalogue):
    from flows.migrate import CatalogueFailed, migrate_catalogue

    edit(catalogue, "twin_mlp", lambda spec: transposed_dense_1(spec))
    with pytest.raises(CatalogueFailed) as failed:
        migrate_catalogue(str(catalogue), only=["twin_mlp"])
    [summary] = failed.value.rows
    assert summary["failed_stage"] == "verify"
    assert summary["error"].startswith("first divergent layer: 'dense_1' (TF1 dense_1/Relu:0, Relu)")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("ferry-examples").experiment_id
    [run] = client.search_runs([experiment], "attributes.run_name = 'twin_mlp'")
    assert run.data.tags["parity.first_divergence"] == "dense_1"
    assert "first divergent layer: 'dense_1'" in run.data.tags["mlflow.note.content"]
    assert {"parity.json", "first_divergence.json", "plots/divergence.png"} <= artifact_paths(client, run.info.run_id)
