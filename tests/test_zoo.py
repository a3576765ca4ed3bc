"""zoo/build.py writes real TF1-era models: reference variables, optimizer state, shards."""

import ferry  # noqa: F401  (sets TF env defaults before TensorFlow is imported)

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

BUILD = Path(__file__).resolve().parents[1] / "zoo" / "build.py"
MODELS = ("linear", "mlp", "mnist_cnn")
TRAIN_STEPS = {"linear": 20, "mlp": 10, "mnist_cnn": 5}

# Checkpoint weights (optimizer state excluded) and their shapes.
WEIGHTS = {
    "linear": {"dense/kernel": [1, 1], "dense/bias": [1]},
    "mlp": {
        "dense/kernel": [784, 64], "dense/bias": [64],
        "dense_1/kernel": [64, 128], "dense_1/bias": [128],
        "dense_2/kernel": [128, 10], "dense_2/bias": [10],
    },
    "mnist_cnn": {
        "conv2d/kernel": [3, 3, 1, 32], "conv2d/bias": [32],
        "conv2d_1/kernel": [3, 3, 32, 64], "conv2d_1/bias": [64],
        "dense/kernel": [1600, 10], "dense/bias": [10],
    },
}
INPUTS = {"linear": {"x": (64, 1)}, "mlp": {"x": (64, 784)}, "mnist_cnn": {"images": (32, 28, 28, 1)}}
OUTPUTS = {"linear": {"y": "y:0"}, "mlp": {"probs": "probs:0"}, "mnist_cnn": {"probs": "probs:0"}}


def run_build(*args: str) -> subprocess.CompletedProcess:
    """Run zoo/build.py in its own process (it needs tf_keras and disable_v2_behavior)."""
    return subprocess.run(
        [sys.executable, str(BUILD), *args], capture_output=True, text=True, timeout=300
    )


def expected_keys(name: str) -> dict[str, list[int]]:
    """Every checkpoint key with its shape: weights, optimizer slots, global_step."""
    keys = dict(WEIGHTS[name], global_step=[])
    if name == "linear":
        keys.update({f"{k}/Momentum": s for k, s in WEIGHTS[name].items()})
    else:
        for k, s in WEIGHTS[name].items():
            keys.update({f"{k}/Adam": s, f"{k}/Adam_1": s})
        keys.update(beta1_power=[], beta2_power=[])
    return keys


def file_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file under folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def ckpt_values(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    result = run_build("--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    for name in MODELS:
        assert name in result.stdout, result.stdout
    return out


def test_layout(zoo: Path):
    assert sorted(p.name for p in zoo.iterdir()) == sorted(MODELS)  # no .tmp- leftovers
    for name in MODELS:
        files = sorted(str(p.relative_to(zoo / name)) for p in (zoo / name).rglob("*") if p.is_file())
        assert files == [
            "manifest.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
            "model.ckpt.meta", *[f"shards/shard-{i:03d}.npz" for i in range(4)],
        ]


@pytest.mark.parametrize("name", MODELS)
def test_manifest(zoo: Path, name: str):
    manifest = json.loads((zoo / name / "manifest.json").read_text())
    assert manifest["name"] == name
    assert manifest["inputs"] == {k: f"{k}:0" for k in INPUTS[name]}
    assert manifest["outputs"] == OUTPUTS[name]
    assert manifest["tf_version"] == tf.__version__


@pytest.mark.parametrize("name", MODELS)
def test_meta_graph_is_tf1_era(zoo: Path, name: str):
    manifest = json.loads((zoo / name / "manifest.json").read_text())
    with tf.Graph().as_default() as graph:
        tf.compat.v1.train.import_meta_graph(str(zoo / name / "model.ckpt.meta"))
        ops = Counter(op.type for op in graph.get_operations())
        assert ops["VariableV2"] == len(expected_keys(name))
        assert ops["VarHandleOp"] == 0 and ops["ReadVariableOp"] == 0
        for weight in WEIGHTS[name]:  # reference variables are read through .../read
            assert graph.get_operation_by_name(f"{weight}/read").type == "Identity"
        for tensor in [*manifest["inputs"].values(), *manifest["outputs"].values()]:
            graph.get_tensor_by_name(tensor)
        for key, shape in INPUTS[name].items():
            placeholder = graph.get_operation_by_name(key)
            assert placeholder.type == "Placeholder"
            assert placeholder.outputs[0].shape.as_list() == [None, *shape[1:]]


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_keys_and_optimizer_state(zoo: Path, name: str):
    reader = tf.train.load_checkpoint(str(zoo / name / "model.ckpt"))
    assert reader.get_variable_to_shape_map() == expected_keys(name)
    assert reader.get_tensor("global_step") == TRAIN_STEPS[name]


@pytest.mark.parametrize("name", MODELS)
def test_shards(zoo: Path, name: str):
    for i in range(4):
        with np.load(zoo / name / "shards" / f"shard-{i:03d}.npz") as shard:
            assert set(shard.files) == set(INPUTS[name])
            for key, shape in INPUTS[name].items():
                assert shard[key].shape == shape and shard[key].dtype == np.float32


@pytest.mark.parametrize("name", MODELS)
def test_graph_runs_from_checkpoint(zoo: Path, name: str):
    """The TF1 graph restores with its own Saver and computes its outputs on a shard."""
    folder = zoo / name
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / "shards" / "shard-000.npz") as shard:
        feeds = {manifest["inputs"][k]: shard[k] for k in shard.files}
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        saver = tf.compat.v1.train.import_meta_graph(str(folder / "model.ckpt.meta"))
        saver.restore(sess, str(folder / "model.ckpt"))
        (out,) = sess.run(list(manifest["outputs"].values()), feed_dict=feeds)
    rows = next(iter(INPUTS[name].values()))[0]
    if name == "linear":
        assert out.shape == (rows, 1)
    else:
        assert out.shape == (rows, 10)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_second_run_leaves_files_untouched(zoo: Path):
    before = file_stamps(zoo)
    result = run_build("--out", str(zoo))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("skipped") == len(MODELS)
    assert file_stamps(zoo) == before


def test_force_rebuilds_deterministically_and_incomplete_folder_is_replaced(zoo: Path, tmp_path):
    shutil.copytree(zoo / "linear", tmp_path / "linear")
    (tmp_path / "mlp").mkdir()  # an incomplete build: no manifest.json
    (tmp_path / "mlp" / "junk").write_text("half-written")
    before = file_stamps(tmp_path / "linear")

    result = run_build("--out", str(tmp_path), "--only", "mlp")  # no --force
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (tmp_path / "mlp" / "junk").exists()
    assert (tmp_path / "mlp" / "manifest.json").exists()
    assert file_stamps(tmp_path / "linear") == before

    result = run_build("--out", str(tmp_path), "--only", "linear", "mlp", "--force")
    assert result.returncode == 0, result.stderr[-4000:]
    after = file_stamps(tmp_path / "linear")
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linear", "mlp"]  # no temp folders
    for name in ("linear", "mlp"):  # fixed seeds: same trained values as the first build
        fresh, first = ckpt_values(tmp_path / name / "model.ckpt"), ckpt_values(zoo / name / "model.ckpt")
        assert fresh.keys() == first.keys()
        for key in first:
            np.testing.assert_array_equal(fresh[key], first[key], err_msg=key)
        for i in range(4):
            shard = f"shards/shard-{i:03d}.npz"
            with np.load(tmp_path / name / shard) as a, np.load(zoo / name / shard) as b:
                for key in b.files:
                    np.testing.assert_array_equal(a[key], b[key])


def test_unknown_model_is_rejected(tmp_path):
    result = run_build("--out", str(tmp_path), "--only", "nope")
    assert result.returncode != 0
    assert "nope" in result.stderr
    for name in MODELS:
        assert name in result.stderr
    assert list(tmp_path.iterdir()) == []
