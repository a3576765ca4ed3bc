"""`architecture: auto` and `ferry draft-spec` on real TF1 graphs: our zoo, tf_slim's networks, and a
`tf.compat.v1.layers` CNN with batch norm and dropout behind an `is_training` switch."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_tf1_script
from mlflow.tracking import MlflowClient

from ferry.cli import main
from ferry.keras3.run import device_for, load_keras, run_keras
from ferry.shards import load_shard
from ferry.spec import load_catalogue, load_spec
from ferry.stages import WorkDir
from ferry.tf1.auto import SUPPORTED
from ferry.tf1.session import ReferenceUnavailable, run_tf1
from flows.migrate import migrate_catalogue
from tasks.export import call_savedmodel
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import verify_shard_records

ZOO = ["linear", "mlp", "mnist_cnn", "resnet_bn", "text_lstm", "gru_seq", "transformer"]
SLIM = ["slim_resnet_v1", "slim_resnet_v2", "slim_inception_v1", "slim_alexnet_v2", "slim_inception_v2"]

# tests/tf1_builders/auto_graphs.py
OWN = ["layers_bn_dropout", "unsupported", "lstm_adagrad", "lstm_ftrl", "nchw_convnet"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, zoo, slim_zoo) -> dict[str, Path]:
    """meta path per model: the example zoo, tf_slim's nets (zoo/slim_nets.py, conftest's session build), and
    this module's own graphs."""
    out = tmp_path_factory.mktemp("auto")
    run_tf1_script(REPO / "tests" / "tf1_builders" / "auto_graphs.py", out / "own")
    metas = {name: zoo / name / "model.ckpt.meta" for name in ZOO}
    metas |= {name: slim_zoo / name / "model.ckpt.meta" for name in SLIM}
    metas |= {name: out / "own" / name / "model.ckpt.meta" for name in OWN}
    return metas


def draft(meta: Path, folder: Path, name: str) -> Path:
    out = folder / "models" / f"{name}.yaml"
    assert main(["draft-spec", str(meta), "-o", str(out)]) == 0
    return out


def auto_spec(spec_path: Path, tmp_path: Path):
    """The drafted spec with `architecture: auto` and no rules: everything derived from the graph."""
    text = spec_path.read_text()
    head, _, rest = text.partition("architecture:\n")
    tail = rest[rest.index("verify:"):]
    path = spec_path.with_name(f"{spec_path.stem}_auto.yaml")
    path.write_text(head + "architecture: auto\nname_map: {skip: [optimizer]}\n" + tail)
    return load_spec(path)


@pytest.mark.tf1
@pytest.mark.parametrize("name", ZOO + SLIM + ["layers_bn_dropout"])
def test_auto_converts_and_matches_the_tf1_graph(graphs, tmp_path, name):
    spec = auto_spec(draft(graphs[name], tmp_path, name), tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0  # every weight bound by construction
    for i, shard in enumerate(spec.shard_paths()[:2]):
        record = verify_shard_records(spec, info, restored, shard, i)
        for out in record["outputs"].values():
            assert out["passed"], out
            assert out["norm_rel_err"] <= 1e-4
            if name not in ("gru_seq",):  # gru_seq's near-zero scores: see test_parity / README
                assert out["max_rel_err"] <= 1e-4, out


# tf_slim nets built on request only (zoo/slim_nets.py `large`): FERRY_LARGE_NETS=1 converts and verifies them.
# VGG and OverFeat (~0.5 GB checkpoints each): bench/auto_coverage.py --large.
LARGE_SLIM = ["slim_inception_v3", "slim_resnet_v2_50", "slim_resnet_v1_101", "slim_resnet_v2_101"]


@pytest.fixture(scope="module")
def large_slim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("large_slim")
    run_tf1_script(REPO / "zoo" / "slim_nets.py", "--out", str(out), "--only", *LARGE_SLIM)
    return out


@pytest.mark.tf1
@pytest.mark.skipif(not os.environ.get("FERRY_LARGE_NETS"), reason="large tf_slim nets: set FERRY_LARGE_NETS=1")
@pytest.mark.parametrize("name", LARGE_SLIM)
def test_auto_converts_the_large_slim_nets(large_slim, tmp_path, name):
    spec = auto_spec(draft(large_slim / name / "model.ckpt.meta", tmp_path, name), tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    for i, shard in enumerate(spec.shard_paths()):  # resnet_v1_101: 7.6e-5-1e-4 with Grappler's arithmetic optimizer
        record = verify_shard_records(spec, info, restored, shard, i)
        for out in record["outputs"].values():
            assert out["passed"] and out["norm_rel_err"] <= 1e-5, out


@pytest.mark.unit
def test_grapplers_arithmetic_optimizer_is_off_where_ferry_runs_keras():
    """It regroups adds inside verify's compiled forward (docs/design.md); off in every process that imports
    `ferry.keras3.run`, as `ferry.GRAPPLER_OPTIONS` says (what MLflow records)."""
    import tensorflow as tf

    import ferry
    import ferry.keras3.run  # applies them on import

    assert ferry.GRAPPLER_OPTIONS == {"arithmetic_optimization": False}
    assert tf.config.optimizer.get_experimental_options()["arithmetic_optimization"] is False


@pytest.mark.tf1
@pytest.mark.parametrize("name, optimizer", [("lstm_adagrad", "Adagrad"), ("lstm_ftrl", "Ftrl")])
def test_auto_converts_lstms_trained_with_adagrad_and_ftrl(graphs, tmp_path, name, optimizer):
    """Their slots sit under the cell's scope (`rnn/lstm_cell/kernel/Adagrad`, `…/Ftrl_1`): optimizer state
    that the name map skips, not extra weights of the cell."""
    spec = auto_spec(draft(graphs[name], tmp_path, name), tmp_path)
    assert (spec.verify.tolerance.atol, spec.verify.tolerance.rtol) == (1e-5, 1e-5)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    [lstm] = [n for n in info["auto"]["architecture"]["graph"]["nodes"] if n.get("class") == "LSTM"]
    assert lstm["name"] == "rnn.lstm_cell" and lstm["units"] == 16
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    table = json.loads(Path(restored["mapping"]).read_text())["table"]
    skipped = {key for key, status in zip(table["key"], table["status"]) if status == "skipped"}
    assert f"rnn/lstm_cell/kernel/{optimizer}" in skipped and f"embedding/{optimizer}" in skipped
    for i, shard in enumerate(spec.shard_paths()):
        record = verify_shard_records(spec, info, restored, shard, i)
        assert record["passed"], record


@pytest.mark.tf1
def test_nchw_converts_and_a_cpu_reference_names_the_node_it_cannot_run(graphs, tmp_path):
    """Conv2D, BiasAdd, FusedBatchNormV3 and pools written NCHW convert (the convs between transposes) and match
    the NHWC twin's outputs at 1e-5; verifying on CPU, where TF has no NCHW Conv2D kernel, is an error naming
    the node and what to do, unless a GPU runs the reference."""
    spec = auto_spec(draft(graphs["nchw_convnet"], tmp_path, "nchw"), tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    nodes = {n["name"]: n for n in info["auto"]["architecture"]["graph"]["nodes"]}
    assert nodes["conv1"]["class"] == "Conv2D" and nodes["conv1.nhwc"]["axes"] == [0, 2, 3, 1]
    assert nodes["bn1"]["axis"] == 1
    assert {n.get("data_format") for n in nodes.values() if n.get("class") == "MaxPooling2D"} == {"channels_first"}
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    model = load_keras(spec, info, restored["weights"])
    expected = np.load(Path(graphs["nchw_convnet"]).parent / "expected.npz")
    for shard in spec.shard_paths():
        got = run_keras(spec, model, load_shard(spec, shard), 8, "/CPU:0")["y"]
        want = expected[Path(shard).stem]
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if ":GPU:" in device_for(0).upper():
        assert verify_shard_records(spec, info, restored, spec.shard_paths()[0], 0)["passed"]
        return
    with pytest.raises(ReferenceUnavailable) as err:
        verify_shard_records(spec, info, restored, spec.shard_paths()[0], 0)
    message = str(err.value)  # the first op TF refuses: a conv or a pool
    assert re.search(r"node (conv\d/Conv2D|max_pooling2d/MaxPool|average_pooling2d/AvgPool) "
                     r"\((Conv2D|MaxPool|AvgPool), data_format NCHW\) has no kernel for NCHW", message), message
    assert "Verify on a GPU machine" in message and "re-export the TF1 graph NHWC" in message


@pytest.mark.tf1
def test_auto_layers_are_idiomatic_and_named_after_tf1_scopes(graphs, tmp_path):
    spec = auto_spec(draft(graphs["slim_resnet_v1"], tmp_path, "r"), tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    nodes = {n["name"]: n for n in info["auto"]["architecture"]["graph"]["nodes"]}
    conv = nodes["resnet_v1.conv1"]
    assert conv["class"] == "Conv2D" and conv["use_bias"] is False and conv["kernel_size"] == [7, 7]
    bn = nodes["resnet_v1.conv1.BatchNorm"]
    assert bn["class"] == "ferry.TF1BatchNormalization" and bn["epsilon"] == pytest.approx(1e-5)
    classes = {n.get("class") for n in nodes.values()}
    assert {"Conv2D", "ferry.TF1BatchNormalization", "MaxPooling2D"} <= classes
    rules = {r["from"]: r["to"] for r in info["auto"]["rules"]}
    assert rules["resnet_v1/conv1/weights"] == "resnet_v1.conv1/kernel"
    assert rules["resnet_v1/conv1/BatchNorm/moving_variance"] == "resnet_v1.conv1.BatchNorm/moving_variance"

    spec = auto_spec(draft(graphs["text_lstm"], tmp_path, "t"), tmp_path)
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    [lstm] = [n for n in info["auto"]["architecture"]["graph"]["nodes"] if n.get("class") == "LSTM"]
    assert lstm["name"] == "rnn.lstm_cell" and lstm["units"] == 32
    assert {"from": "rnn/lstm_cell", "to": "rnn.lstm_cell/lstm_cell", "match": "exact",
            "transform": {"lstm": {"forget_bias": 1.0}}} in info["auto"]["rules"]


@pytest.mark.tf1
def test_ops_without_translation_run_as_raw_ops_and_are_listed(graphs, tmp_path, capsys):
    """Cumprod, ResizeArea, ResizeBicubic have no translation here: they run as `ferry.RawOp`
    (tests/test_auto_fallback.py checks the numbers), and the draft and `ferry inspect` warn with one node each."""
    from ferry.tf1.draft import draft_spec, survey

    meta = graphs["unsupported"]
    found = survey(meta)
    assert found.translation is not None and not found.blockers
    assert found.translation.fallbacks["Cumprod"] in ("Cumprod", "Cumprod_1")  # one node of the type
    assert set(found.translation.fallbacks) == {"Cumprod", "ResizeArea", "ResizeBicubic"}
    text = draft_spec(found, tmp_path / "models" / "u.yaml")
    assert "run as raw TF ops" in text and f"#   Cumprod: {found.translation.fallbacks['Cumprod']}" in text

    assert main(["inspect", str(meta)]) == 0
    out = capsys.readouterr().out
    assert "no translation and run as raw TF ops" in out
    assert any(line.split() == ["Cumprod", found.translation.fallbacks["Cumprod"]] for line in out.splitlines()), out
    assert main(["inspect", str(graphs["slim_inception_v1"])]) == 0
    assert "every op between the guessed inputs and outputs translates" in capsys.readouterr().out


@pytest.mark.tf1
@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_harness")
def test_drafted_specs_validate_and_migrate_unchanged(graphs, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "specs"
    for name in SLIM + ["layers_bn_dropout", "resnet_bn", "text_lstm"]:
        draft(graphs[name], folder, name)
    (folder / "catalogue.yaml").write_text("models: [models/*.yaml]\ntracking: {experiment: drafts}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["validate", str(folder / "catalogue.yaml")]) == 0
    assert f"{len(SLIM) + 3} of {len(SLIM) + 3} specs valid" in capsys.readouterr().out

    rows = migrate_catalogue(str(folder / "catalogue.yaml"))
    assert all(r["status"] == "passed" and r["coverage"] == 1.0 for r in rows), rows
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("drafts").experiment_id],
                              "attributes.run_name = 'slim_inception_v1'")
    assert runs[0].data.metrics["coverage.model_weights"] == 1.0
    cat = load_catalogue(folder / "catalogue.yaml")
    spec = cat.specs["slim_inception_v1"]
    arrays = load_shard(spec, spec.shard_paths()[0])
    got = call_savedmodel(spec, spec.export.dir, arrays)
    want = run_tf1(spec, arrays, 4, "/CPU:0")
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


@pytest.mark.unit
def test_supported_op_list_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [op for op in SUPPORTED if f"`{op}`" not in readme]
    assert not missing, f"README lacks supported ops {missing}"
