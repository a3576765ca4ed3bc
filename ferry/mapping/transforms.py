"""Weight transforms for the name-map engine: pure numpy functions, registered by name with `@transform`.

A rule in a spec's name map may name a transform (and its parameters); the engine then feeds the
transform the matched checkpoint arrays and the shapes of the Keras weights they must become.
Adding a transform is one decorated function here, its numerical test against the TF1 op it
replaces (tests/test_transforms.py, `@against_tf1`) and its row in the README's Name map table.

The run-time constants a checkpoint does not hold (an LSTM cell's forget bias, a batch norm's
epsilon) are read from the TF1 graph by `ferry.tf1.facts`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[int, ...]
Apply = Callable[[list[np.ndarray], list[Shape], dict[str, Any]], list[np.ndarray]]


class TransformError(ValueError):
    """A transform cannot turn these arrays into these shapes (the message says why)."""


@dataclass(frozen=True)
class Transform:
    """One registered transform: what it reads, what it writes, and the numpy function."""

    name: str
    doc: str  # one line: the function's docstring summary unless given
    # Scope transforms: checkpoint key suffixes under the matched TF1 scope, in order.
    # None: the rule's own matched keys, in the rule's order.
    sources: tuple[str, ...] | None
    # Scope transforms: Keras weight suffixes under the rule's `to` scope.
    # None: the rule's own targets.
    targets: tuple[str, ...] | None
    params: dict[str, str]  # accepted parameter name -> one-line description
    apply: Apply  # (sources in order, target shapes in order, params) -> targets in order


# Every transform, by name: filled by `@transform`, read by the spec's validation and the name-map planner.
TRANSFORMS: dict[str, Transform] = {}


def transform(name: str, *, sources: tuple[str, ...] | None = None, targets: tuple[str, ...] | None = None,
              params: dict[str, str] | None = None, doc: str | None = None) -> Callable[[Apply], Apply]:
    """Register the decorated numpy function as transform `name` (doc: its docstring's first line)."""

    def register(apply: Apply) -> Apply:
        line = doc or (apply.__doc__ or "").strip().split("\n", 1)[0]
        if not line:
            raise ValueError(f"transform {name!r} needs a one-line doc (a docstring or doc=...)")
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is registered twice")
        if (sources is None) != (targets is None):
            raise ValueError(f"transform {name!r}: a scope transform names both its sources and its targets")
        TRANSFORMS[name] = Transform(name, line, sources, targets, dict(params or {}), apply)
        return apply

    return register


# --------------------------------------------------------------------------------------------
# Checks and messages


def _shapes(arrays: Iterable[np.ndarray] | Iterable[Shape]) -> str:
    """`[3, 4], [4]` for error messages."""
    items = [tuple(a.shape) if isinstance(a, np.ndarray) else tuple(a) for a in arrays]
    return ", ".join(str(list(s)) for s in items) or "none"


def _fail(name: str, sources: Sequence[np.ndarray], target_shapes: Sequence[Shape],
          expected: str) -> TransformError:
    """The error every check raises: transform, source shapes, target shapes, expectation."""
    return TransformError(
        f"transform {name!r}: sources {_shapes(sources)} -> targets {_shapes(target_shapes)}: "
        f"expected {expected}")


def _expect_counts(name: str, sources: Sequence[np.ndarray], target_shapes: Sequence[Shape],
                   n_sources: int | None, n_targets: int | None) -> None:
    """Raise unless there are `n_sources` sources and `n_targets` targets (None: any, >= 1)."""
    ok_s = len(sources) == n_sources if n_sources is not None else len(sources) >= 1
    ok_t = len(target_shapes) == n_targets if n_targets is not None else len(target_shapes) >= 1
    if not (ok_s and ok_t):
        want_s = n_sources if n_sources is not None else "one or more"
        want_t = n_targets if n_targets is not None else "one or more"
        raise _fail(name, sources, target_shapes, f"{want_s} source(s) and {want_t} target(s)")


def _int_param(name: str, params: dict[str, Any], key: str, default: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TransformError(f"transform {name!r}: parameter {key!r} must be an integer, "
                             f"got {value!r}")
    return int(value)


def _shape_param(name: str, params: dict[str, Any], key: str) -> Shape | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        raise TransformError(f"transform {name!r}: parameter {key!r} must be a list of "
                             f"integers, got {value!r}")
    return tuple(int(v) for v in value)


def _float_param(name: str, params: dict[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TransformError(f"transform {name!r}: parameter {key!r} must be a number, "
                             f"got {value!r}")
    return float(value)


def _axis(name: str, params: dict[str, Any], ndim: int) -> int:
    """The `axis` parameter (default -1), normalised to 0..ndim-1."""
    axis = _int_param(name, params, "axis", -1)
    if not -ndim <= axis < ndim:
        raise TransformError(f"transform {name!r}: axis {axis} is out of range for "
                             f"{ndim}-D arrays")
    return axis % ndim


# --------------------------------------------------------------------------------------------
# Generic transforms


@transform("transpose", params={"perm": "permutation of the source's axes (default: reversed)"})
def _transpose(sources: list[np.ndarray], target_shapes: list[Shape],
               params: dict[str, Any]) -> list[np.ndarray]:
    """np.transpose(a, perm), like tf.transpose; perm defaults to reversing the axes."""
    _expect_counts("transpose", sources, target_shapes, 1, 1)
    (a,) = sources
    perm = _shape_param("transpose", params, "perm")
    if perm is not None and sorted(perm) != list(range(a.ndim)):
        raise _fail("transpose", sources, target_shapes,
                    f"perm to be a permutation of 0..{a.ndim - 1}, got {list(perm)}")
    return [np.ascontiguousarray(np.transpose(a, perm))]


@transform("reshape", params={"shape": "new shape, one -1 allowed (default: the target's shape)"})
def _reshape(sources: list[np.ndarray], target_shapes: list[Shape],
             params: dict[str, Any]) -> list[np.ndarray]:
    """C-order reshape, like tf.reshape; shape defaults to the target's."""
    _expect_counts("reshape", sources, target_shapes, 1, 1)
    (a,) = sources
    shape = _shape_param("reshape", params, "shape") or tuple(target_shapes[0])
    known = [d for d in shape if d != -1]
    count = int(np.prod(known, dtype=np.int64))
    if shape.count(-1) > 1 or (-1 in shape and (count == 0 or a.size % count)) or (
            -1 not in shape and count != a.size):
        raise _fail("reshape", sources, target_shapes,
                    f"the same number of elements: {a.size} cannot be reshaped to {list(shape)}")
    return [a.reshape(shape)]


@transform("split", params={"axis": "axis to split (default -1); sizes come from the targets"})
def _split(sources: list[np.ndarray], target_shapes: list[Shape],
           params: dict[str, Any]) -> list[np.ndarray]:
    """Split one array into the targets along an axis, like tf.split.

    out_i = a[..., o_i : o_i + n_i, ...] along `axis` (default -1); n_i from target i's shape.
    """
    _expect_counts("split", sources, target_shapes, 1, None)
    (a,) = sources
    axis = _axis("split", params, a.ndim)
    if any(len(t) != a.ndim for t in target_shapes):
        raise _fail("split", sources, target_shapes, f"{a.ndim}-D targets")
    sizes = [t[axis] for t in target_shapes]
    if sum(sizes) != a.shape[axis]:
        raise _fail("split", sources, target_shapes,
                    f"target sizes along axis {axis} ({' + '.join(map(str, sizes))}) to add up "
                    f"to the source's {a.shape[axis]}")
    return [np.ascontiguousarray(p) for p in np.split(a, np.cumsum(sizes)[:-1], axis=axis)]


@transform("concat", params={"axis": "axis to join (default -1)"})
def _concat(sources: list[np.ndarray], target_shapes: list[Shape],
            params: dict[str, Any]) -> list[np.ndarray]:
    """Concatenate the sources along an axis (default -1), like tf.concat."""
    _expect_counts("concat", sources, target_shapes, None, 1)
    ndim = sources[0].ndim
    axis = _axis("concat", params, ndim)
    rest = {tuple(np.delete(s.shape, axis)) for s in sources}
    if any(s.ndim != ndim for s in sources) or len(rest) != 1:
        raise _fail("concat", sources, target_shapes,
                    f"sources whose shapes differ only along axis {axis}")
    return [np.concatenate(sources, axis=axis)]


@transform("conv_to_dense")
def _conv_to_dense(sources: list[np.ndarray], target_shapes: list[Shape],
                   params: dict[str, Any]) -> list[np.ndarray]:
    """Conv kernel [kh,kw,in,out] used as FC -> Dense kernel after NHWC Flatten [kh*kw*in, out].

    A VALID conv whose kernel covers the whole NHWC map computes
    y[o] = sum_{h,w,c} x[h,w,c] K[h,w,c,o], and Keras `Flatten` of NHWC data orders x as (h, w, c),
    so the Dense kernel is the C-order reshape (row (h*kw + w)*in + c). A 1x1 conv kernel becomes
    [in, out].
    """
    _expect_counts("conv_to_dense", sources, target_shapes, 1, 1)
    (k,) = sources
    if k.ndim != 4:
        raise _fail("conv_to_dense", sources, target_shapes, "a 4-D conv kernel [kh, kw, in, out]")
    kh, kw, cin, cout = k.shape
    if tuple(target_shapes[0]) != (kh * kw * cin, cout):
        raise _fail("conv_to_dense", sources, target_shapes,
                    f"a Dense kernel [kh*kw*in, out] = {[kh * kw * cin, cout]}")
    return [k.reshape(kh * kw * cin, cout)]


@transform("attention_heads")
def _attention_heads(sources: list[np.ndarray], target_shapes: list[Shape],
                     params: dict[str, Any]) -> list[np.ndarray]:
    """2-D q/k/v/output projection -> Keras MultiHeadAttention per-head shape (C-order reshape).

    query/key/value kernel [d, h*k] -> [d, h, k]; their bias [h*k] -> [h, k];
    output kernel [h*k, d] -> [h, k, d]; output bias [d] -> [d]. Head i owns the columns (rows for
    the output kernel) i*k .. i*k+k-1, as when TF1 code reshapes [B, T, h*k] to [B, T, h, k].
    """
    _expect_counts("attention_heads", sources, target_shapes, 1, 1)
    (a,) = sources
    s, t = tuple(a.shape), tuple(target_shapes[0])
    cases = (
        len(s) == 2 and len(t) == 3 and s == (t[0], t[1] * t[2]),  # q/k/v kernel
        len(s) == 2 and len(t) == 3 and s == (t[0] * t[1], t[2]),  # output kernel
        len(s) == 1 and len(t) == 2 and s == (t[0] * t[1],),  # q/k/v bias
        len(s) == 1 and s == t,  # output bias
    )
    if not any(cases):
        raise _fail("attention_heads", sources, target_shapes,
                    "kernel [d, h*k] -> [d, h, k], bias [h*k] -> [h, k], "
                    "output kernel [h*k, d] -> [h, k, d] or output bias [d] -> [d]")
    return [a.reshape(t)]


# --------------------------------------------------------------------------------------------
# Recurrent cells


def _cell_dims(name: str, sources: list[np.ndarray], target_shapes: list[Shape], n_sources: int,
               want: Callable[[int, int], dict[str, tuple[Shape, Shape]]], what: str,
               gates: int | None = None) -> tuple[int, int]:
    """(input size, units) of a recurrent cell, read from the Keras targets (kernel, recurrent_kernel,
    bias): units are the recurrent kernel's rows, or the bias over `gates` when given (an LSTM whose output
    is projected: its recurrent kernel has a row per output). Every shape in `want(n_in, units)` (label ->
    (got, expected)) must agree, else TransformError."""
    _expect_counts(name, sources, target_shapes, n_sources, 3)
    t_kernel, t_recurrent, t_bias = (tuple(t) for t in target_shapes)
    if gates:
        units = t_bias[0] // gates if len(t_bias) == 1 and t_bias[0] % gates == 0 else -1
    else:
        units = t_recurrent[0] if len(t_recurrent) == 2 else -1
    n_in = t_kernel[0] if len(t_kernel) == 2 else -1
    wrong = [f"{label} {list(w)} (got {list(g)})" for label, (g, w) in want(n_in, units).items() if g != w]
    if units <= 0 or n_in <= 0 or wrong:
        raise _fail(name, sources, target_shapes,
                    f"{what} with input {n_in} and units {units}: {'; '.join(wrong) or 'no units'}")
    return n_in, units


def _lstm_units(sources: list[np.ndarray], target_shapes: list[Shape]) -> tuple[int, int]:
    """(input size, units), after checking every shape of the lstm transform; the recurrent kernel has a
    row per output: `units`, or `num_proj` for a cell with a projection."""
    outputs = tuple(target_shapes[1])[0] if len(target_shapes) == 3 and len(target_shapes[1]) == 2 else -1
    return _cell_dims("lstm", sources, target_shapes, 2, lambda n_in, units: {
        "target kernel": (tuple(target_shapes[0]), (n_in, 4 * units)),
        "target recurrent_kernel": (tuple(target_shapes[1]), (outputs, 4 * units)),
        "target bias": (tuple(target_shapes[2]), (4 * units,)),
        "source kernel": (tuple(sources[0].shape), (n_in + outputs, 4 * units)),
        "source bias": (tuple(sources[1].shape), (4 * units,)),
    }, "TF1 LSTMCell kernel [input + outputs, 4*units] and bias [4*units] for a Keras LSTM", gates=4)


@transform("lstm", sources=("kernel", "bias"), targets=("kernel", "recurrent_kernel", "bias"),
           params={"forget_bias": "the cell's run-time forget bias, folded into the bias (default 1.0; read it "
                                  "with lstm_forget_bias)"})
def _lstm(sources: list[np.ndarray], target_shapes: list[Shape],
          params: dict[str, Any]) -> list[np.ndarray]:
    """TF1 LSTMCell/BasicLSTMCell/LSTMBlockCell (i,j,f,o; forget_bias) -> Keras LSTM (i,f,c,o).

    TF1: [i, j, f, o] = [x, h] @ W + b; c' = s(f + forget_bias) * c + s(i) * tanh(j).
    Keras: [i, f, c, o] = x @ K + h @ R + b'; c' = s(f) * c + s(i) * tanh(c).
    So columns go i, j, f, o -> i, f, j, o; K = rows [:input], R = rows [input:];
    b' = b reordered with forget_bias added to its f part. With a projection (`num_proj`, ferry's
    TF1LSTM) h is the projected output and R has a row per projected unit.
    """
    n_in, units = _lstm_units(sources, target_shapes)
    forget_bias = _float_param("lstm", params, "forget_bias", 1.0)
    kernel, bias = sources
    order = [0, 2, 1, 3]  # Keras gate g takes TF1 gate order[g]: i, f, c(=j), o

    def reorder(a: np.ndarray) -> np.ndarray:
        parts = np.split(a, 4, axis=-1)
        return np.concatenate([parts[g] for g in order], axis=-1)

    new_kernel = reorder(kernel)
    new_bias = reorder(bias).copy()
    new_bias[units:2 * units] += np.asarray(forget_bias, dtype=bias.dtype)
    return [np.ascontiguousarray(new_kernel[:n_in]), np.ascontiguousarray(new_kernel[n_in:]),
            new_bias.astype(bias.dtype, copy=False)]


def _gru_units(sources: list[np.ndarray], target_shapes: list[Shape], name: str = "gru") -> tuple[int, int]:
    """(input size, units), after checking every shape of the gru (or gru_block) transform."""
    kernel, bias, cand_kernel, cand_bias = TRANSFORMS[name].sources
    return _cell_dims(name, sources, target_shapes, 4, lambda n_in, units: {
        "target kernel": (tuple(target_shapes[0]), (n_in, 3 * units)),
        "target recurrent_kernel": (tuple(target_shapes[1]), (units, 3 * units)),
        "target bias (reset_after=False)": (tuple(target_shapes[2]), (3 * units,)),
        f"source {kernel}": (tuple(sources[0].shape), (n_in + units, 2 * units)),
        f"source {bias}": (tuple(sources[1].shape), (2 * units,)),
        f"source {cand_kernel}": (tuple(sources[2].shape), (n_in + units, units)),
        f"source {cand_bias}": (tuple(sources[3].shape), (units,)),
    }, "TF1 GRUCell weights for a Keras GRU(reset_after=False)")


def _gru_weights(sources: list[np.ndarray], target_shapes: list[Shape], name: str) -> list[np.ndarray]:
    """Keras GRU(reset_after=False) kernel, recurrent kernel and bias from TF1's gates (r, u) and candidate."""
    n_in, _ = _gru_units(sources, target_shapes, name)
    gates_kernel, gates_bias, cand_kernel, cand_bias = sources
    r_k, u_k = np.split(gates_kernel, 2, axis=1)
    r_b, u_b = np.split(gates_bias, 2)
    kernel = np.concatenate([u_k, r_k, cand_kernel], axis=1)
    return [np.ascontiguousarray(kernel[:n_in]), np.ascontiguousarray(kernel[n_in:]),
            np.concatenate([u_b, r_b, cand_bias])]


@transform("gru", sources=("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"),
           targets=("kernel", "recurrent_kernel", "bias"))
def _gru(sources: list[np.ndarray], target_shapes: list[Shape],
         params: dict[str, Any]) -> list[np.ndarray]:
    """TF1 GRUCell (gates r,u + candidate) -> Keras GRU(reset_after=False) (z,r,h).

    TF1: [r, u] = s([x, h] @ G + g); c = tanh([x, r*h] @ C + b); h' = u*h + (1-u)*c.
    Keras: z, r = s(x @ K_z + h @ R_z + b_z), s(x @ K_r + h @ R_r + b_r);
    hh = tanh(x @ K_h + (r*h) @ R_h + b_h); h' = z*h + (1-z)*hh.
    Both let the update gate keep the old state, so no sign flip: K = [G_u | G_r | C] over the
    input rows, R = the same over the state rows, bias = [g_u | g_r | b].
    """
    return _gru_weights(sources, target_shapes, "gru")


@transform("gru_block", sources=("w_ru", "b_ru", "w_c", "b_c"), targets=("kernel", "recurrent_kernel", "bias"))
def _gru_block(sources: list[np.ndarray], target_shapes: list[Shape],
               params: dict[str, Any]) -> list[np.ndarray]:
    """TF1 GRUBlockCell (w_ru, b_ru, w_c, b_c) -> Keras GRU(reset_after=False) (z,r,h).

    The fused cell computes what GRUCell does, with the same weights under other names: `w_ru` [x, h] ->
    (r, u) is GRUCell's `gates/kernel`, `w_c` its `candidate/kernel`; so the layout is the `gru` transform's.
    """
    return _gru_weights(sources, target_shapes, "gru_block")


def _basic_rnn_units(sources: list[np.ndarray], target_shapes: list[Shape]) -> tuple[int, int]:
    """(input size, units), after checking every shape of the basic_rnn transform."""
    return _cell_dims("basic_rnn", sources, target_shapes, 2, lambda n_in, units: {
        "target kernel": (tuple(target_shapes[0]), (n_in, units)),
        "target recurrent_kernel": (tuple(target_shapes[1]), (units, units)),
        "target bias": (tuple(target_shapes[2]), (units,)),
        "source kernel": (tuple(sources[0].shape), (n_in + units, units)),
        "source bias": (tuple(sources[1].shape), (units,)),
    }, "TF1 BasicRNNCell kernel [input + units, units] and bias [units] for a Keras SimpleRNN")


@transform("basic_rnn", sources=("kernel", "bias"), targets=("kernel", "recurrent_kernel", "bias"))
def _basic_rnn(sources: list[np.ndarray], target_shapes: list[Shape],
               params: dict[str, Any]) -> list[np.ndarray]:
    """TF1 BasicRNNCell ([x, h] kernel) -> Keras SimpleRNN (kernel, recurrent_kernel).

    TF1: h' = act([x, h] @ W + b); Keras: h' = act(x @ K + h @ R + b): K = rows [:input], R = rows [input:].
    """
    n_in, _ = _basic_rnn_units(sources, target_shapes)
    kernel, bias = sources
    return [np.ascontiguousarray(kernel[:n_in]), np.ascontiguousarray(kernel[n_in:]), bias]


def get_transform(name: str) -> Transform:
    """The registered transform `name`; the error lists the supported names."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise TransformError(f"unknown transform {name!r}; supported: "
                             f"{', '.join(sorted(TRANSFORMS))}") from None


def run_transform(name: str, sources: Sequence[np.ndarray], target_shapes: Sequence[Sequence[int]],
                  params: dict[str, Any] | None = None) -> list[np.ndarray]:
    """Validate `params`, apply transform `name`, and check each output against its target shape."""
    chosen = get_transform(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(chosen.params))
    if unknown:
        accepted = ", ".join(sorted(chosen.params)) or "none"
        raise TransformError(f"transform {name!r}: unknown parameter(s) {', '.join(unknown)}; "
                             f"accepted: {accepted}")
    arrays = [np.asarray(a) for a in sources]
    shapes = [tuple(int(d) for d in s) for s in target_shapes]
    outputs = chosen.apply(arrays, shapes, params)
    if len(outputs) != len(shapes):
        raise _fail(name, arrays, shapes, f"{len(shapes)} outputs, got {len(outputs)}")
    for i, (out, shape) in enumerate(zip(outputs, shapes)):
        if tuple(out.shape) != shape:
            raise _fail(name, arrays, shapes,
                        f"output {i} of shape {list(shape)}, got {list(out.shape)}")
    dtype = arrays[0].dtype if arrays else None
    return [out.astype(dtype, copy=False) if dtype is not None else out for out in outputs]
