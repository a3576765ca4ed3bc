"""Tests for ferry.mapping.transforms: every transform checked numerically against the TF1 op it replaces.

The TF1 references are built once, in a separate process (tf_keras + TF1 behaviour), by
tests/tf1_builders/transform_refs.py from seeded random weights and inputs; it saves inputs, weights (by
variable name) and outputs to an .npz and the graph to a `.meta`. Here each Keras 3 layer gets its weights
through `run_transform` and must reproduce the TF1 outputs. A transform's check is marked `@against_tf1(NAME)`;
every registered transform must have one, and a row in the README's Name map table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_tf1_script

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
from ferry.keras3.layers import TF1LSTM
from ferry.mapping.transforms import (
    TRANSFORMS,
    TransformError,
    get_transform,
    run_transform,
)
from ferry.tf1.facts import batch_norm_epsilon, lstm_forget_bias

TOL = {"atol": 1e-5, "rtol": 1e-5}

# transform -> the tests that check it numerically against the TF1 op it replaces (filled by `@against_tf1`)
TF1_CHECKS: dict[str, list[str]] = {}


def against_tf1(*names: str) -> Callable[[Callable], Callable]:
    """Register the decorated test as the numerical check of transforms `names` against the TF1 ops they replace
    (the test takes the `refs` fixture); marked `tf1`."""

    def register(test: Callable) -> Callable:
        for name in names:
            TF1_CHECKS.setdefault(name, []).append(test.__name__)
        return pytest.mark.tf1(test)

    return register


class Refs:
    """The TF1 references: inputs, outputs, variables by name, and the imported graph."""

    def __init__(self, npz: Path, meta: Path) -> None:
        with np.load(npz) as data:
            self.arrays = {k: data[k] for k in data.files}
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.train.import_meta_graph(str(meta), clear_devices=True)

    def input(self, name: str) -> np.ndarray:
        return self.arrays[f"in:{name}"]

    def output(self, name: str) -> np.ndarray:
        return self.arrays[f"out:{name}"]

    def var(self, name: str) -> np.ndarray:
        return self.arrays[f"var:{name}"]

    def scope(self, scope: str, suffixes: tuple[str, ...]) -> list[np.ndarray]:
        return [self.var(f"{scope}/{s}") for s in suffixes]


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> Refs:
    """Build every TF1 reference once, in a separate process (tf_keras needs its own env)."""
    root = tmp_path_factory.mktemp("transform_refs")
    run_tf1_script(REPO / "tests" / "tf1_builders" / "transform_refs.py", str(root))
    return Refs(root / "refs.npz", root / "model.ckpt.meta")


def assign_scope(layer: keras.Layer, name: str, sources: list[np.ndarray],
                 params: dict | None = None) -> None:
    """Assign a built layer's weights through the scope transform `name` (targets by suffix)."""
    weights = {w.path.rsplit("/", 1)[-1]: w for w in layer.weights}
    targets = [weights[t] for t in get_transform(name).targets]
    outputs = run_transform(name, sources, [tuple(w.shape) for w in targets], params)
    for weight, value in zip(targets, outputs):
        weight.assign(value)


def run_rnn(layer: keras.Layer, refs: Refs, cell_scope: str, transform: str,
            params: dict | None = None) -> np.ndarray:
    """Build `layer` on the sequence input, assign the TF1 cell's weights, return its outputs."""
    seq = refs.input("seq")
    layer(seq)
    sources = refs.scope(cell_scope, get_transform(transform).sources)
    assign_scope(layer, transform, sources, params)
    return np.asarray(layer(seq))


# --------------------------------------------------------------------------------------------
# Recurrent cells


@against_tf1("lstm")
@pytest.mark.parametrize(("name", "cell", "forget_bias"),
                         [("lstm", "lstm_cell", 1.0), ("basic", "basic_lstm_cell", 0.5)])
def test_lstm_matches_tf1_cell(refs: Refs, name: str, cell: str, forget_bias: float) -> None:
    scope = f"{name}/{cell}"
    read = lstm_forget_bias(refs.graph, scope)
    assert read == forget_bias
    got = run_rnn(keras.layers.LSTM(8, return_sequences=True), refs, scope, "lstm",
                  {"forget_bias": read})
    np.testing.assert_allclose(got, refs.output(name), **TOL)


@against_tf1("lstm")
def test_stacked_lstm_cells(refs: Refs) -> None:
    """MultiRNNCell: cell ops live under `stack/while/stack/multi_rnn_cell/...` (scope repeated)."""
    scopes = ["stack/multi_rnn_cell/cell_0/lstm_cell",
              "stack/multi_rnn_cell/cell_1/basic_lstm_cell"]
    biases = [lstm_forget_bias(refs.graph, s) for s in scopes]
    assert biases == [0.25, 2.0]
    seq = refs.input("seq")
    model = keras.Sequential([keras.Input(seq.shape[1:]),
                              keras.layers.LSTM(8, return_sequences=True),
                              keras.layers.LSTM(8, return_sequences=True)])
    for layer, scope, bias in zip(model.layers, scopes, biases):
        assign_scope(layer, "lstm", refs.scope(scope, ("kernel", "bias")), {"forget_bias": bias})
    np.testing.assert_allclose(np.asarray(model(seq)), refs.output("stack"), **TOL)


@pytest.mark.tf1
def test_lstm_without_forget_bias_does_not_match(refs: Refs) -> None:
    """The folded forget bias matters: leaving it out changes the outputs."""
    got = run_rnn(keras.layers.LSTM(8, return_sequences=True), refs, "lstm/lstm_cell", "lstm",
                  {"forget_bias": 0.0})
    assert np.abs(got - refs.output("lstm")).max() > 1e-3


@pytest.mark.tf1
def test_lstm_forget_bias_names_missing_scope(refs: Refs) -> None:
    with pytest.raises(TransformError, match="gru/gru_cell"):
        lstm_forget_bias(refs.graph, "gru/gru_cell")
    with pytest.raises(TransformError, match="nowhere/lstm_cell"):
        lstm_forget_bias(refs.graph, "nowhere/lstm_cell")


@against_tf1("gru")
def test_gru_matches_tf1_cell(refs: Refs) -> None:
    got = run_rnn(keras.layers.GRU(8, reset_after=False, return_sequences=True), refs,
                  "gru/gru_cell", "gru")
    np.testing.assert_allclose(got, refs.output("gru"), **TOL)


@against_tf1("gru_block")
def test_gru_block_matches_tf1_cell(refs: Refs) -> None:
    got = run_rnn(keras.layers.GRU(8, reset_after=False, return_sequences=True), refs, "gru_block/gru_cell",
                  "gru_block")
    np.testing.assert_allclose(got, refs.output("gru_block"), **TOL)


@against_tf1("basic_rnn")
def test_basic_rnn_matches_tf1_cell(refs: Refs) -> None:
    got = run_rnn(keras.layers.SimpleRNN(8, return_sequences=True), refs, "basic_rnn/basic_rnn_cell", "basic_rnn")
    np.testing.assert_allclose(got, refs.output("basic_rnn"), **TOL)


@against_tf1("lstm")
def test_lstm_with_peepholes_projection_and_clips(refs: Refs) -> None:
    """ferry's TF1LSTM: the `lstm` transform gives it a recurrent kernel of `num_proj` rows; the peephole
    weights and the projection are TF1's as they are. Both clips bite on these weights."""
    scope, seq = "projected/lstm_cell", refs.input("seq")
    layer = TF1LSTM(8, num_proj=5, use_peepholes=True, cell_clip=0.8, proj_clip=0.3, return_sequences=True)
    layer(seq)
    assign_scope(layer, "lstm", refs.scope(scope, ("kernel", "bias")),
                 {"forget_bias": lstm_forget_bias(refs.graph, scope)})
    weights = {w.path.rsplit("/", 1)[-1]: w for w in layer.weights}
    for name in ("w_i_diag", "w_f_diag", "w_o_diag"):
        weights[name].assign(refs.var(f"{scope}/{name}"))
    weights["projection_kernel"].assign(refs.var(f"{scope}/projection/kernel"))
    want = refs.output("projected")
    assert np.abs(want).max() == pytest.approx(0.3)  # the projection clip bites
    np.testing.assert_allclose(np.asarray(layer(seq)), want, **TOL)


@pytest.mark.tf1
@pytest.mark.parametrize("mistake", ["tf1_gate_order", "update_gate_flipped"])
def test_gru_wrong_conventions_do_not_match(refs: Refs, mistake: str) -> None:
    """The test can fail: TF1's r, u order kept, or z = 1 - u (the Chung et al. convention,
    h' = (1-z)*h + z*c, made by negating the update gate's pre-activation) both differ."""
    layer = keras.layers.GRU(8, reset_after=False, return_sequences=True)
    layer(refs.input("seq"))
    gk, gb, ck, cb = refs.scope("gru/gru_cell", get_transform("gru").sources)
    (r_k, u_k), (r_b, u_b) = np.split(gk, 2, axis=1), np.split(gb, 2)
    if mistake == "tf1_gate_order":
        kernel, bias = np.concatenate([r_k, u_k, ck], 1), np.concatenate([r_b, u_b, cb])
    else:
        kernel, bias = np.concatenate([-u_k, r_k, ck], 1), np.concatenate([-u_b, r_b, cb])
    layer.set_weights([kernel[:4], kernel[4:], bias])
    got = np.asarray(layer(refs.input("seq")))
    assert np.abs(got - refs.output("gru")).max() > 1e-3


@pytest.mark.unit
def test_lstm_error_names_the_shapes() -> None:
    kernel, bias = np.zeros((10, 32), np.float32), np.zeros(32, np.float32)
    with pytest.raises(TransformError) as info:
        run_transform("lstm", [kernel, bias], [(4, 32), (8, 32), (32,)])
    message = str(info.value)
    assert "'lstm'" in message and "[10, 32]" in message and "[12, 32]" in message


# --------------------------------------------------------------------------------------------
# Dense, conv and attention layouts


@against_tf1("conv_to_dense")
def test_conv_to_dense_fc6(refs: Refs) -> None:
    """A 7x7 VALID conv on a 7x7 map, flattened == Keras Flatten + Dense."""
    model = keras.Sequential([keras.Input((7, 7, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(5)])
    dense = model.layers[-1]
    (kernel,) = run_transform("conv_to_dense", [refs.var("fc6/kernel")], [dense.kernel.shape], {})
    dense.set_weights([kernel, refs.var("fc6/bias")])
    np.testing.assert_allclose(np.asarray(model(refs.input("map7"))), refs.output("fc6"), **TOL)


@against_tf1("conv_to_dense")
def test_conv_to_dense_1x1(refs: Refs) -> None:
    """A 1x1 conv == a Dense applied to every pixel of the NHWC map."""
    dense = keras.layers.Dense(6)
    dense(refs.input("map4"))
    (kernel,) = run_transform("conv_to_dense", [refs.var("conv1x1/kernel")], [(3, 6)], {})
    dense.set_weights([kernel, refs.var("conv1x1/bias")])
    np.testing.assert_allclose(np.asarray(dense(refs.input("map4"))), refs.output("conv1x1"),
                               **TOL)


@against_tf1("attention_heads")
def test_attention_heads_match_tf1_attention(refs: Refs) -> None:
    x = refs.input("tokens")
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    mha(x, x)
    denses = {"query": mha._query_dense, "key": mha._key_dense, "value": mha._value_dense,
              "output": mha._output_dense}
    for scope, dense in denses.items():
        for weight in dense.weights:
            suffix = weight.path.rsplit("/", 1)[-1]
            (value,) = run_transform("attention_heads", [refs.var(f"mha/{scope}/{suffix}")],
                                     [tuple(weight.shape)], {})
            weight.assign(value)
    np.testing.assert_allclose(np.asarray(mha(x, x)), refs.output("mha"), **TOL)


@pytest.mark.unit
def test_attention_heads_rejects_other_shapes() -> None:
    with pytest.raises(TransformError, match=r"'attention_heads'.*\[8, 8\].*\[4, 4, 4\]"):
        run_transform("attention_heads", [np.zeros((8, 8), np.float32)], [(4, 4, 4)], {})


# --------------------------------------------------------------------------------------------
# Generic array transforms


@against_tf1("transpose", "reshape", "split", "concat")
def test_transpose_reshape_split_concat_match_tf1(refs: Refs) -> None:
    a, b = refs.input("a"), refs.input("b")
    (t,) = run_transform("transpose", [a], [(5, 3, 4)], {"perm": [2, 0, 1]})
    np.testing.assert_array_equal(t, refs.output("transpose"))
    (r,) = run_transform("reshape", [a], [(4, 15)], {})
    np.testing.assert_array_equal(r, refs.output("reshape"))
    (r,) = run_transform("reshape", [a], [(4, 15)], {"shape": [4, -1]})
    np.testing.assert_array_equal(r, refs.output("reshape"))
    parts = run_transform("split", [a], [(3, 1, 5), (3, 3, 5)], {"axis": 1})
    for part, name in zip(parts, ("split0", "split1")):
        np.testing.assert_array_equal(part, refs.output(name))
    (c,) = run_transform("concat", [a, b], [(3, 6, 5)], {"axis": 1})
    np.testing.assert_array_equal(c, refs.output("concat"))


@against_tf1("split")
def test_split_fused_qkv_kernel(refs: Refs) -> None:
    """A fused qkv kernel [d, 3d] split into three Dense kernels == TF1's slices of x @ qkv."""
    x = refs.input("rows")
    kernels = run_transform("split", [refs.var("qkv/kernel")], [(6, 6)] * 3, {"axis": 1})
    for kernel, name in zip(kernels, "qkv"):
        dense = keras.layers.Dense(6, use_bias=False)
        dense(x)
        dense.set_weights([kernel])
        np.testing.assert_allclose(np.asarray(dense(x)), refs.output(name), **TOL)


@pytest.mark.unit
def test_outputs_keep_the_source_dtype() -> None:
    kernel, bias = np.ones((12, 32), np.float16), np.zeros(32, np.float16)
    outs = run_transform("lstm", [kernel, bias], [(4, 32), (8, 32), (32,)], {"forget_bias": 1.0})
    assert [o.dtype for o in outs] == [np.float16] * 3
    assert outs[2][8:16].tolist() == [1.0] * 8 and outs[2][:8].tolist() == [0.0] * 8


# --------------------------------------------------------------------------------------------
# Batch norm epsilon


@pytest.mark.tf1
def test_batch_norm_epsilon_from_graph(refs: Refs) -> None:
    """The epsilon read from the fused op makes Keras match; Keras' default 1e-3 would not.

    The input placeholder is also named `bn`, so the layer's ops land in name scope `bn_1/` while
    its variables stay under `bn/`: the op is found through the variables, not by its name.
    """
    fused = [op.name for op in refs.graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert "bn_1/FusedBatchNormV3" in fused and not any(n.startswith("bn/") for n in fused)
    eps = batch_norm_epsilon(refs.graph, "bn")
    assert eps == pytest.approx(1e-5, rel=0.01)
    x, expected = refs.input("bn"), refs.output("bn")

    def keras_bn(epsilon: float) -> np.ndarray:
        layer = keras.layers.BatchNormalization(scale=False, epsilon=epsilon)
        layer(x)
        layer.beta.assign(refs.var("bn/beta"))
        layer.moving_mean.assign(refs.var("bn/moving_mean"))
        layer.moving_variance.assign(refs.var("bn/moving_variance"))
        return np.asarray(layer(x, training=False))

    np.testing.assert_allclose(keras_bn(eps), expected, **TOL)
    assert np.abs(keras_bn(1e-3) - expected).max() > 1e-3


@pytest.mark.tf1
def test_batch_norm_epsilon_in_cond_and_unfused(refs: Refs) -> None:
    assert batch_norm_epsilon(refs.graph, "bn_cond") == pytest.approx(1e-4)
    assert batch_norm_epsilon(refs.graph, "bn_unfused") == pytest.approx(2e-3)
    with pytest.raises(TransformError, match="nowhere"):
        batch_norm_epsilon(refs.graph, "nowhere")


# --------------------------------------------------------------------------------------------
# Registry and errors


@pytest.mark.unit
def test_registry_is_documented() -> None:
    for name, transform in TRANSFORMS.items():
        assert transform.name == name and transform.doc and "\n" not in transform.doc
        assert transform.apply.__doc__


@pytest.mark.unit
def test_every_transform_is_checked_against_tf1() -> None:
    """Every registered transform has a numerical test against the TF1 op it replaces, and every such test
    names a registered transform and reads the TF1 references."""
    untested, unknown = sorted(set(TRANSFORMS) - set(TF1_CHECKS)), sorted(set(TF1_CHECKS) - set(TRANSFORMS))
    assert not untested, f"transforms without a test against TF1 (@against_tf1): {untested}"
    assert not unknown, f"@against_tf1 names no registered transform: {unknown}"
    for tests in TF1_CHECKS.values():
        for test in tests:
            assert "refs" in inspect.signature(globals()[test]).parameters, test


def readme_transforms() -> dict[str, str]:
    """The README's Name map transforms table: transform -> its params cell."""
    section = (REPO / "README.md").read_text().split("\n### Name map\n", 1)[1].split("\n### ", 1)[0]
    lines = [ln.strip() for ln in section.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| transform |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] not in rows, f"README: two rows for {cells[0]}"
        rows[cells[0]] = cells[-1]
    return rows


@pytest.mark.unit
def test_every_transform_has_a_readme_row() -> None:
    """Both ways: every row names a registered transform (in backquotes), every transform has a row; the
    params column names each parameter the transform accepts ("–" for none)."""
    rows, names = readme_transforms(), {f"`{name}`" for name in TRANSFORMS}
    assert not names - set(rows), f"README Name map: no row for {sorted(names - set(rows))}"
    assert not set(rows) - names, f"README Name map: rows name no registered transform: {sorted(set(rows) - names)}"
    for name, transform in TRANSFORMS.items():
        cell = rows[f"`{name}`"]
        assert all(f"`{p}`" in cell for p in transform.params) and (transform.params or cell == "–"), (name, cell)


@pytest.mark.unit
def test_unknown_transform_lists_supported() -> None:
    with pytest.raises(TransformError, match="unknown transform 'bogus'.*attention_heads.*lstm") as info:
        run_transform("bogus", [np.zeros(3)], [(3,)], {})
    assert str(info.value).split("supported: ", 1)[1].split(", ") == sorted(TRANSFORMS)


@pytest.mark.unit
def test_unknown_param_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(TransformError, match="'split'.*axes.*accepted: axis"):
        run_transform("split", [np.zeros((2, 4))], [(2, 2), (2, 2)], {"axes": 1})


@pytest.mark.unit
def test_reshape_count_mismatch() -> None:
    with pytest.raises(TransformError, match=r"'reshape'.*\[3, 4\].*12.*\[5, 3\]"):
        run_transform("reshape", [np.zeros((3, 4))], [(5, 3)], {})


@pytest.mark.unit
def test_output_shape_must_equal_target_shape() -> None:
    with pytest.raises(TransformError, match=r"'reshape'.*shape \[4, 3\], got \[2, 6\]"):
        run_transform("reshape", [np.zeros((3, 4))], [(4, 3)], {"shape": [2, 6]})


@pytest.mark.unit
def test_split_sizes_must_add_up() -> None:
    with pytest.raises(TransformError, match=r"'split'.*2 \+ 3.*4"):
        run_transform("split", [np.zeros((2, 4))], [(2, 2), (2, 3)], {"axis": 1})
