"""The stages on real TF1 checkpoints, called as plain functions (no Prefect, no MLflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import spec_of

from ferry.keras3.build import build_model, weight_paths
from ferry.spec import load_spec
from ferry.stages import WorkDir
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import RestoreError, restore_weights
from tasks.verify import ParityError, verify_shard

pytestmark = pytest.mark.tf1

TWIN_SPEC = """
name: twin_mlp
source:
  meta: zoo/twin_mlp/model.ckpt.meta
  inputs: {x: "x:0"}
  outputs: {probs: "probs:0"}
architecture:
  layers:
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 32, activation: relu}
    - {class: Dense, units: 4, activation: softmax}
name_map:
  skip: [optimizer]
  rules: RULES
verify:
  shards: zoo/twin_mlp/shards/*.npz
export:
  dir: exports/twin_mlp
"""


@pytest.fixture(scope="module")
def twin_zoo(tmp_path_factory, twin_mlp) -> Path:
    """A folder with `zoo/twin_mlp` (conftest's: a TF1 MLP with two same-shaped hidden layers, built by the zoo
    script in its own process) for the specs written beside it."""
    root = tmp_path_factory.mktemp("twin-specs")
    (root / "zoo").mkdir()
    (root / "zoo" / "twin_mlp").symlink_to(twin_mlp, target_is_directory=True)
    return root


def twin_spec(folder: Path, rules: str):
    path = folder / "twin_mlp.yaml"
    path.write_text(TWIN_SPEC.replace("RULES", rules))
    return load_spec(path)


def prepare(spec, work: Path):
    """(inspect's result, reconstruct's result)."""
    inspected = inspect_graph(spec, WorkDir(work))
    return inspected, reconstruct(spec, inspected)


def test_common_recipe_restores_nothing_while_ferry_fails_loudly(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    inspected, info = prepare(spec, tmp_path)
    model = build_model(spec, info["inputs"])
    before = {p: w.numpy().copy() for p, w in weight_paths(model).items()}

    # The recipe most tutorials give: no error, and not one weight restored.
    tf.train.Checkpoint(model=model).restore(str(spec.source.checkpoint_prefix)).expect_partial()
    reader = tf.train.load_checkpoint(str(spec.source.checkpoint_prefix))
    for path, w in weight_paths(model).items():
        np.testing.assert_array_equal(w.numpy(), before[path])
        assert not np.array_equal(w.numpy(), reader.get_tensor(path))  # the checkpoint holds other values

    empty = spec.model_copy(update={"name_map": spec.name_map.model_copy(update={"rules": []})})
    with pytest.raises(RestoreError) as info_:
        restore_weights(empty, info, inspected, WorkDir(tmp_path))
    message = str(info_.value)
    assert "mlp.yaml: name_map:" in message
    assert "6 of 6 model weights unassigned (model-weight coverage 0%)" in message
    assert "the name map has no rules: add e.g. `rules: [{from: '(.*)'}]`" in message
    assert ("suggested rules (shape-compatible unused keys, in graph order):\n"
            "  - {from: 'dense/kernel', to: 'dense/kernel'}") in message
    assert not (tmp_path / "restored.weights.h5").exists()  # nothing half-restored to hand on


def test_ferry_restore_assigns_every_checkpoint_value(catalogue, tmp_path):
    spec = spec_of(catalogue, "mnist_cnn")
    inspected, info = prepare(spec, tmp_path)
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    assert restored["coverage"]["checkpoint_keys_skipped"] == 15  # 12 Adam slots, 2 beta powers, global_step
    model = build_model(spec, info["inputs"])
    model.load_weights(restored["weights"])
    reader = tf.train.load_checkpoint(str(spec.source.checkpoint_prefix))
    for path, w in weight_paths(model).items():
        np.testing.assert_array_equal(w.numpy(), reader.get_tensor(path))


def test_shape_mismatch_names_both_sides_and_shapes(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    layers = [layer.model_copy() for layer in spec.architecture.layers]
    layers[0] = layers[0].model_validate({"class": "Dense", "units": 32, "activation": "relu"})
    spec = spec.model_copy(update={"architecture": spec.architecture.model_copy(update={"layers": layers})})
    inspected, info = prepare(spec, tmp_path)
    with pytest.raises(RestoreError, match=r"shape mismatch: checkpoint key 'dense/kernel' has shape \[784, 64\], "
                                           r"model weight 'dense/kernel' has shape \[784, 32\]"):
        restore_weights(spec, info, inspected, WorkDir(tmp_path))


def test_declared_tensor_missing_from_graph_is_named(catalogue, tmp_path):
    spec = spec_of(catalogue, "mlp")
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"outputs": {"probs": "softmax:0"}})})
    with pytest.raises(ValueError, match=r"mlp.yaml: source.outputs.probs: no op 'softmax' in the graph"):
        inspect_graph(spec, WorkDir(tmp_path))


def test_swapped_same_shaped_layers_pass_restore_and_fail_verify(twin_zoo, tmp_path):
    good = twin_spec(twin_zoo, "[{from: '(.*)'}]")
    inspected, info = prepare(good, tmp_path)
    restored = restore_weights(good, info, inspected, WorkDir(tmp_path))
    record = verify_shard(good, info, restored, good.shard_paths()[0], 0)
    assert record["passed"] and record["outputs"]["probs"]["max_abs_err"] <= 1e-5

    swapped = twin_spec(twin_zoo, r"[{from: 'dense_1/(.*)', to: 'dense_2/\1'}, "
                                  r"{from: 'dense_2/(.*)', to: 'dense_1/\1'}, {from: '(.*)'}]")
    restored = restore_weights(swapped, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0  # shapes agree: restore cannot tell
    with pytest.raises(ParityError) as info_:
        verify_shard(swapped, info, restored, swapped.shard_paths()[0], 0)
    out = info_.value.record["outputs"]["probs"]
    assert out["passed"] is False and out["max_abs_err"] > 1e-3
    assert "shard" in str(info_.value) and "out of tolerance" in str(info_.value)
