"""Checkpoint variants on real TF1 checkpoints: partitioned variables, EMA shadows, float16 and bfloat16."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import REPO, run_tf1_script

from ferry.keras3.build import build_model, weight_paths
from ferry.spec import ModelSpec, load_spec
from ferry.stages import WorkDir
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import RestoreError, restore_weights

pytestmark = pytest.mark.tf1


def make_spec(folder: Path, tmp_path: Path, ckpt: str = "whole", layers: list | None = None,
              rules: list | None = None, **name_map) -> ModelSpec:
    """A spec over the variants graph; by default `emb` (partitioned) and `dense` (with EMA shadows)."""
    spec = {
        "name": "variants",
        "source": {"meta": str(folder / "whole/model.ckpt.meta"), "checkpoint": str(folder / ckpt / "model.ckpt"),
                   "inputs": {"x": "x:0"}, "outputs": {"y": "y:0"}},
        "architecture": {"layers": layers or [{"class": "Dense", "units": 4, "use_bias": False, "name": "emb"},
                                              {"class": "Dense", "units": 2, "name": "dense"}]},
        "name_map": {"skip": ["optimizer", "ema", "half/.*", "brain/.*"],
                     "rules": rules or [{"from": "emb", "to": "emb/kernel"},
                                        {"from": "dense/(kernel|bias)", "to": r"dense/\1"}],
                     **name_map},
        "verify": {"shards": str(folder / "shard.npz")},
        "export": {"dir": str(tmp_path / "export")},
    }
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_spec(path)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("variants")
    run_tf1_script(REPO / "tests" / "tf1_builders" / "checkpoint_variants.py", str(out))
    return out


def restored(spec, tmp_path):
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    result = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    model = build_model(spec, info["inputs"])
    model.load_weights(result["weights"])
    return result, weight_paths(model)


@pytest.mark.parametrize("layout", ["whole", "parts"])
def test_partitioned_variable_is_restored_whole(variants, tmp_path, layout):
    keys = dict(tf.train.list_variables(str(variants / layout / "model.ckpt")))
    assert ("emb" in keys) == (layout == "whole") and ("emb/part_0" in keys) == (layout == "parts")
    result, weights = restored(make_spec(variants, tmp_path, layout), tmp_path)
    assert result["coverage"]["model_weights"] == 1.0
    whole = tf.train.load_checkpoint(str(variants / "whole/model.ckpt")).get_tensor("emb")
    np.testing.assert_array_equal(weights["emb/kernel"].numpy(), whole)


def test_ema_shadows_are_opt_in(variants, tmp_path):
    reader = tf.train.load_checkpoint(str(variants / "whole/model.ckpt"))
    raw, shadow = reader.get_tensor("dense/kernel"), reader.get_tensor("dense/kernel/ExponentialMovingAverage")
    assert not np.array_equal(raw, shadow)
    _, weights = restored(make_spec(variants, tmp_path), tmp_path)
    np.testing.assert_array_equal(weights["dense/kernel"].numpy(), raw)
    _, weights = restored(make_spec(variants, tmp_path, use_ema=True, skip=["optimizer", "half/.*", "brain/.*"]),
                          tmp_path)
    np.testing.assert_array_equal(weights["dense/kernel"].numpy(), shadow)


@pytest.mark.parametrize("scope", ["half", "brain"])
def test_low_precision_keys_need_the_cast_policy(variants, tmp_path, scope):
    """float16 / bfloat16 kernels into a float32 model: refused under `keep`, cast and reported under `cast`."""
    layers = [{"class": "Dense", "units": 2, "use_bias": False, "name": scope}]
    rules = [{"from": f"{scope}/kernel"}]
    skip = ["optimizer", "ema", "emb", "dense/.*", "half/.*" if scope == "brain" else "brain/.*"]
    spec = make_spec(variants, tmp_path, layers=layers, rules=rules, skip=skip)
    spec = spec.model_copy(update={"architecture": spec.architecture.model_copy(update={"input_shapes": {"x": [4]}})})
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    dtype = "float16" if scope == "half" else "bfloat16"
    with pytest.raises(RestoreError, match=rf"dtype mismatch: checkpoint key\(s\) \['{scope}/kernel'\] are {dtype}, "
                                           rf"model weight '{scope}/kernel' is float32"):
        restore_weights(spec, info, inspected, WorkDir(tmp_path))

    cast = spec.model_copy(update={"name_map": spec.name_map.model_copy(update={"dtype_policy": "cast"})})
    result = restore_weights(cast, info, inspected, WorkDir(tmp_path))
    table = json.loads((tmp_path / "mapping.json").read_text())["table"]
    assert [t for k, t in zip(table["key"], table["transform"]) if k == f"{scope}/kernel"] == [f"cast {dtype}->float32"]
    model = build_model(cast, info["inputs"])
    model.load_weights(result["weights"])
    want = tf.train.load_checkpoint(str(variants / "whole/model.ckpt")).get_tensor(f"{scope}/kernel")
    np.testing.assert_array_equal(weight_paths(model)[f"{scope}/kernel"].numpy(), np.asarray(want, np.float32))
