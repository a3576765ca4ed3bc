"""Functional graphs, factories and graph facts; bad input that must stop a model before export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ferry.cli import main
from ferry.keras3.build import build_model, weight_paths
from ferry.mapping.transforms import TRANSFORMS
from ferry.spec import load_catalogue
from ferry.stages import WorkDir
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import RestoreError, restore_weights

pytestmark = pytest.mark.tf1


def edit_spec(catalogue: Path, name: str, change) -> Path:
    """Rewrite one example spec in the test's copy of the catalogue with `change(data)`."""
    path = catalogue.parent / "models" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_of(catalogue: Path, name: str):
    return load_catalogue(catalogue, only=[name]).specs[name]


def test_graph_form_builds_residual_dag_with_uint8_preprocessing(catalogue, tmp_path):
    spec = spec_of(catalogue, "resnet_bn")
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    assert info["inputs"] == {"images": {"shape": [32, 32, 3], "dtype": "uint8"}}
    # epsilon of every batch norm read from its FusedBatchNorm op (1e-5 here, Keras' default is 1e-3)
    assert {name: v["epsilon"] for name, v in info["graph_values"].items()} == {
        n: pytest.approx(1e-5) for n in ["stem_bn", "block1_bn1", "block1_bn2", "block2_bn1", "block2_bn2"]}
    model = build_model(spec, info["inputs"], info["graph_values"])
    assert model.get_layer("block2_bn2").epsilon == pytest.approx(1e-5)
    assert "block2_bn2/gamma" not in info["weights"] and "block1_bn2/gamma" in info["weights"]
    out = model(np.full((2, 32, 32, 3), 255, np.uint8))
    np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)


def test_graph_form_wiring_errors_name_file_and_field(catalogue, capsys):
    def rewire(data):
        nodes = data["architecture"]["graph"]["nodes"]
        nodes[2]["inputs"] = ["rescaled"]  # typo: no such node
        nodes[3]["class"] = "BatchNorm"  # no such Keras layer

    path = edit_spec(catalogue, "resnet_bn", rewire)
    assert main(["validate", str(catalogue)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: architecture.graph.nodes[2].inputs: not a spec input or an earlier node (got 'rescaled')" in out
    assert f"{path}: architecture.graph.nodes[3]: unknown Keras layer class 'BatchNorm' (got 'BatchNorm')" in out

    edit_spec(catalogue, "resnet_bn", lambda d: d["architecture"]["graph"].update(outputs={"logits": "logits"}))
    problems = load_catalogue(catalogue).problems[str(path)]
    assert "architecture.graph.outputs ['logits'] must name the same outputs as source.outputs ['probs']" in \
        str(problems[0])


def test_factory_outside_allowed_modules_is_refused_before_import(catalogue):
    path = edit_spec(catalogue, "transformer",
                     lambda d: d["architecture"]["factory"].update(function="os:system"))
    problems = load_catalogue(catalogue).problems[str(path)]
    assert [str(p) for p in problems] == [
        f"{path}: architecture.factory.function: module 'os' is not under the catalogue's factory_modules: "
        "factories (got 'os:system')"]
    edit_spec(catalogue, "transformer", lambda d: d["architecture"]["factory"].update(function="no colon"))
    [problem] = load_catalogue(catalogue).problems[str(path)]
    assert problem.field == "architecture.factory.function" and problem.value == "no colon"


def test_factory_model_restores_through_attention_head_transforms(catalogue, tmp_path):
    spec = spec_of(catalogue, "transformer")
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    assert info["weights"]["attention/query/kernel"]["shape"] == [32, 2, 16]
    restored = restore_weights(spec, info, inspected, WorkDir(tmp_path))
    assert restored["coverage"]["model_weights"] == 1.0
    table = json.loads((tmp_path / "mapping.json").read_text())["table"]
    rows = dict(zip(table["key"], zip(table["target"], table["transform"], table["key_shape"], table["target_shape"])))
    assert rows["encoder/layer_0/attention/query/kernel"] == ("attention/query/kernel", "attention_heads",
                                                             [32, 32], [32, 2, 16])


def test_transform_given_the_wrong_shape_stops_the_model(catalogue, tmp_path):
    """An LSTM of the wrong width: the lstm transform refuses, naming the spec file, rule and shapes."""
    edit_spec(catalogue, "text_lstm", lambda d: d["architecture"]["layers"][1].update(units=16))
    spec = spec_of(catalogue, "text_lstm")
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    with pytest.raises(RestoreError) as err:
        restore_weights(spec, info, inspected, WorkDir(tmp_path))
    message = str(err.value)
    assert str(spec.spec_file) in message and "rules[1] 'rnn/lstm_cell' -> 'lstm/lstm_cell' [lstm]" in message
    assert "[48, 128]" in message  # the TF1 kernel's shape
    assert not (tmp_path / "restored.weights.h5").exists()


def test_lstm_forget_bias_is_read_from_the_graph(catalogue, tmp_path):
    from tasks.restore import transform_params

    spec = spec_of(catalogue, "text_lstm")
    assert transform_params(spec) == {1: {"forget_bias": 1.0}}


def test_unknown_transform_and_param_are_spec_errors(catalogue):
    def bad(data):
        data["name_map"]["rules"][1]["transform"] = {"lstm": {"forget": 1.0}}
        data["name_map"]["rules"][2]["transform"] = "flip"

    path = edit_spec(catalogue, "text_lstm", bad)
    problems = [str(p) for p in load_catalogue(catalogue).problems[str(path)]]
    assert any("name_map.rules[1]: transform 'lstm' takes no parameter ['forget']; it takes: forget_bias" in p
               for p in problems)
    prefix = "name_map.rules[2]: unknown transform 'flip'; supported: "
    [supported] = [p.split(prefix, 1)[1] for p in problems if prefix in p]
    assert supported.startswith(", ".join(sorted(TRANSFORMS)))  # every registered transform, in order


def test_weight_paths_are_relative_to_the_model(catalogue, tmp_path):
    spec = spec_of(catalogue, "gru_seq")
    inspected = inspect_graph(spec, WorkDir(tmp_path))
    info = reconstruct(spec, inspected)
    model = build_model(spec, info["inputs"])
    assert sorted(weight_paths(model)) == ["gru/gru_cell/bias", "gru/gru_cell/kernel", "gru/gru_cell/recurrent_kernel",
                                           "head/bias", "head/kernel"]
