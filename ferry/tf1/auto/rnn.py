"""Recurrent networks: TF1's RNN cells, however the graph drives them, become Keras recurrent layers.

- `dynamic_rnn` (each half of `bidirectional_dynamic_rnn` too) is a v1 while loop: `Enter` / `Merge` /
  `Switch` / `NextIteration` / `Exit` per loop variable (the iteration counter, the time, the outputs'
  `TensorArrayV3` flow, then the cell states flattened as TF1 nests them: an LSTM's (c, h), a
  `MultiRNNCell`'s cell by cell, bottom first). Its outputs are read as `Transpose(TensorArrayGatherV3)`
  (time-major: the gather itself), its final states as the loop's `Exit`s. `sequence_length` shows as the
  `Select`s of the body.
- `static_rnn` unrolls the cell: one `MatMul` (or fused cell op) reads the kernel per step, outside any
  loop; the steps are those readers in creation order, a step's ops those the cell's name scope created
  from its input `concat` on.
- contrib's `LSTMBlockFusedCell` is one `BlockLSTM` op (time-major, all steps).

Each cell becomes one layer named after its variable scope: `LSTM` (`LSTMCell`, `BasicLSTMCell`,
`LSTMBlockCell`), `GRU(reset_after=False)` (`GRUCell`, `GRUBlockCell`), `SimpleRNN` (`BasicRNNCell`), or
ferry's `TF1LSTM` for what Keras' LSTM has not (peepholes, `num_proj`, `cell_clip`, `proj_clip`); a
`MultiRNNCell` one layer per cell, stacked. `sequence_length` wraps each in `ferry.MaskedRNN` (TF1's zeros
past the length, the state of the last valid step); the backward half of a bidirectional RNN runs
`go_backwards` on the unreversed input, its outputs flipped back. A layer returns its states when the graph
reads them; `ferry.Pick` nodes take the sequence and each state read. Weights are bound through the `lstm`,
`gru`, `gru_block` and `basic_rnn` transforms (peephole and projection weights as they are).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ferry.facts import IDENTITY_OPS, VARIABLE_OPS, float32, is_optimizer_slot
from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.facts import lstm_forget_bias

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator

PASS = IDENTITY_OPS | {"Enter", "RefEnter"}  # what a value crosses into a loop body through
CELL_OPS = frozenset({"LSTMBlockCell", "GRUBlockCell"})  # a fused cell's step
# a cell's activation (TF1's `activation=`), by op type
ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "sigmoid", "Elu": "elu", "Selu": "selu",
               "Softplus": "softplus"}
KERAS_STATES = {"lstm": ("h", "c"), "gru": ("h",), "rnn": ("h",)}  # Keras' state order, after the output
TF1_STATES = {"lstm": ("c", "h"), "gru": ("h",), "rnn": ("h",)}  # TF1's (LSTMStateTuple is (c, h))
# The op types a static_rnn's step output or final state can be: an LSTM's h (`Mul`, a projection's `MatMul`, a
# clip's `Maximum`), its c (`AddV2`/`Add`), a GRU's h, a BasicRNNCell's activation; and `Pack`, the outputs
# stacked. The fused cells' step ops are a handler's (`static_block_cell`): a fusion does not see which output.
STATIC_ROOTS = ("Mul", "AddV2", "Add", "MatMul", "Maximum", *ACTIVATIONS, "Pack")


@dataclass(frozen=True)
class Cell:
    """One TF1 RNN cell and the Keras layer it becomes."""

    scope: str  # its variables' scope: `rnn/multi_rnn_cell/cell_0/lstm_cell`
    kind: str  # "lstm" (states c, h), "gru" or "rnn" (state h)
    config: dict[str, Any]  # the Keras layer: class and arguments
    keras_cell: str  # the Keras cell's name in the layer (`lstm_cell`)
    rules: tuple[tuple[str, str, Any], ...]  # (TF1 variable or scope, weight under the Keras cell, transform)


@dataclass
class Recurrence:
    """Cells run over one sequence: a dynamic_rnn loop, one static_rnn cell's steps, or a BlockLSTM."""

    cells: tuple[Cell, ...]  # bottom first
    inputs: tf.Tensor | tuple[tf.Tensor, ...]  # the sequence, or (static_rnn) each step's input
    time_major: bool  # `inputs` is [T, B, ...]
    lengths: tf.Tensor | None  # sequence_length
    backwards: bool  # the loop reads its input reversed (the backward half of a bidirectional RNN)
    final: tuple[dict[str, tf.Tensor], ...]  # per cell: its final state by name (c, h)
    steps: tuple[tf.Tensor, ...] = ()  # static_rnn: the cell's output at each step


# -- looking at the graph ----------------------------------------------------------------------------


def _through(tensor: tf.Tensor) -> tf.Tensor:
    """`tensor` as it is outside the loop body (through `Enter`) and identities."""
    while tensor.op.type in PASS:
        tensor = tensor.op.inputs[0]
    return tensor


def _variable(tr: Translator, tensor: tf.Tensor) -> str | None:
    return tr.variable(_through(tensor))


def _consumer(tensor: tf.Tensor, *types: str) -> tf.Operation | None:
    return next((c for c in tensor.consumers() if c.type in types), None)


def _shape(graph: tf.Graph, variable: str) -> list[int]:
    op = graph.get_operation_by_name(variable)
    shape = tf.TensorShape(op.get_attr("shape")) if op.type == "VarHandleOp" else op.outputs[0].shape
    return shape.as_list()


def _exists(graph: tf.Graph, name: str) -> bool:
    try:
        return graph.get_operation_by_name(name).type in VARIABLE_OPS
    except KeyError:
        return False


def _is_zero(tr: Translator, tensor: tf.Tensor) -> bool:
    """A zero initial state: all-zero constant, or `Fill` with 0 (`cell.zero_state`)."""
    tensor = _through(tensor)
    value = tr.static(tensor)
    if value is None and tensor.op.type == "Fill":
        value = tr.static(tensor.op.inputs[1])
    return value is not None and not np.any(value)


def _scope(op: tf.Operation) -> str:
    return op.name.rsplit("/", 1)[0] + "/"


def _step_ops(anchor: tf.Operation, kernel: str, tr: Translator) -> list[tf.Operation]:
    """The ops one step of the cell computes after `anchor` (reading its kernel): consumers under the
    anchor's name scope, up to the next step's reader of the same kernel."""
    scope, seen, stack = _scope(anchor), {anchor.name: anchor}, [anchor]
    while stack:
        for out in stack.pop().outputs:
            for user in out.consumers():
                if user.name in seen or not user.name.startswith(scope):
                    continue
                seen[user.name] = user
                if not (user.type == "MatMul" and _variable(tr, user.inputs[1]) == kernel):
                    stack.append(user)
    return list(seen.values())


def _activation(op: tf.Operation | None, where: str) -> str:
    if op is None or op.type not in ACTIVATIONS:
        raise Unsupported(f"rnn cell activation {op.type if op else 'none'}", where)
    return ACTIVATIONS[op.type]


# -- cells ------------------------------------------------------------------------------------------


def cell_of(tr: Translator, anchor: tf.Operation) -> Cell:
    """The cell whose step `anchor` computes: a MatMul reading its kernel, or a fused cell op."""
    if anchor.type == "GRUBlockCell":
        return _gru_block(tr, anchor)
    if anchor.type in ("LSTMBlockCell", "BlockLSTM"):
        return _lstm_block(tr, anchor)
    kernel = _variable(tr, anchor.inputs[1])
    if kernel.endswith("/gates/kernel"):
        return _gru(tr, anchor, kernel)
    bias_add = _consumer(anchor.outputs[0], "BiasAdd")
    split = bias_add and _consumer(bias_add.outputs[0], "Split")
    if not kernel.endswith("/kernel") or bias_add is None:
        raise Unsupported("rnn cell (kernel without bias)", anchor.name)
    if split is not None and split.get_attr("num_split") == 4:
        return _lstm(tr, anchor, kernel, split)
    scope = kernel.removesuffix("/kernel")
    units = _shape(tr.graph, f"{scope}/bias")[0]
    act = _activation(_consumer(bias_add.outputs[0], *ACTIVATIONS), anchor.name)
    config = {"class": "SimpleRNN", "units": units, **({"activation": act} if act != "tanh" else {})}
    return _checked(tr, Cell(scope, "rnn", config, "simple_rnn_cell", ((scope, "", "basic_rnn"),)), anchor)


def _lstm(tr: Translator, anchor: tf.Operation, kernel: str, split: tf.Operation) -> Cell:
    """LSTMCell / BasicLSTMCell: peepholes, projection and clips read from the graph."""
    scope = kernel.removesuffix("/kernel")
    units = _shape(tr.graph, f"{scope}/bias")[0] // 4
    projection = f"{scope}/projection/kernel"
    num_proj = _shape(tr.graph, projection)[1] if _exists(tr.graph, projection) else None
    peepholes = _exists(tr.graph, f"{scope}/w_f_diag")
    clips: dict[str, set[float]] = {"cell_clip": set(), "proj_clip": set()}
    for op in _step_ops(anchor, kernel, tr):
        bound = tr.static(op.inputs[1]) if op.type == "Minimum" else None
        if bound is not None and np.size(bound) == 1:
            inner = op.inputs[0].op
            projected = inner.type == "MatMul" and _variable(tr, inner.inputs[1]) == projection
            clips["proj_clip" if projected else "cell_clip"].add(float32(bound))
    if any(len(v) > 1 for v in clips.values()):
        raise Unsupported("LSTMCell(clips)", anchor.name)
    act = _activation(_consumer(split.outputs[1], *ACTIVATIONS), anchor.name)
    options = {"num_proj": num_proj, "use_peepholes": peepholes or None,
               **{k: v.pop() for k, v in clips.items() if v}}
    rules = [(scope, "", {"lstm": {"forget_bias": lstm_forget_bias(tr.graph, scope)}})]
    rules += [(f"{scope}/{d}", d, None) for d in ("w_i_diag", "w_f_diag", "w_o_diag") if peepholes]
    rules += [(projection, "projection_kernel", None)] if num_proj else []
    return _checked(tr, _lstm_cell(scope, units, options, act, rules), anchor)


def _lstm_cell(scope: str, units: int, options: dict[str, Any], act: str,
               rules: list[tuple[str, str, Any]]) -> Cell:
    """Keras' LSTM, or ferry's TF1LSTM when the cell has options Keras' has not."""
    options = {k: v for k, v in options.items() if v}
    config = {"class": "ferry.TF1LSTM" if options else "LSTM", "units": units, **options,
              **({"activation": act} if act != "tanh" else {})}
    return Cell(scope, "lstm", config, "lstm_cell", tuple(rules))


def _lstm_block(tr: Translator, op: tf.Operation) -> Cell:
    """contrib's LSTMBlockCell (`LSTMBlockCell` op) or LSTMBlockFusedCell (`BlockLSTM`): the op's inputs
    w, wci, wcf, wco, b and its forget_bias, cell_clip, use_peephole."""
    first = 4 if op.type == "BlockLSTM" else 3
    kernel, *diag, bias = (_variable(tr, t) for t in op.inputs[first:first + 5])
    scope = (kernel or "").removesuffix("/kernel")
    if not kernel or kernel != f"{scope}/kernel" or bias != f"{scope}/bias":
        raise Unsupported(f"{op.type}(weights not named <cell>/kernel, <cell>/bias)", op.name)
    peepholes = op.get_attr("use_peephole")
    names = ("w_i_diag", "w_f_diag", "w_o_diag")
    if peepholes and diag != [f"{scope}/{d}" for d in names]:
        raise Unsupported(f"{op.type}(peephole weights not named <cell>/w_*_diag)", op.name)
    clip = float32(op.get_attr("cell_clip"))
    options = {"use_peepholes": peepholes or None, "cell_clip": clip if clip > 0 else None}
    rules = [(scope, "", {"lstm": {"forget_bias": float32(op.get_attr("forget_bias"))}})]
    rules += [(f"{scope}/{d}", d, None) for d in names if peepholes]
    units = _shape(tr.graph, bias)[0] // 4
    return _checked(tr, _lstm_cell(scope, units, options, "tanh", rules), op)


def _gru(tr: Translator, anchor: tf.Operation, kernel: str) -> Cell:
    """GRUCell: `gates/*` and `candidate/*`."""
    scope = kernel.removesuffix("/gates/kernel")
    units = _shape(tr.graph, f"{scope}/candidate/bias")[0]
    step = _step_ops(anchor, kernel, tr)
    candidate = next((op for op in step if op.type == "BiasAdd"
                      and _variable(tr, op.inputs[1]) == f"{scope}/candidate/bias"), None)
    act = _activation(candidate and _consumer(candidate.outputs[0], *ACTIVATIONS), anchor.name)
    config = {"class": "GRU", "units": units, "reset_after": False, **({"activation": act} if act != "tanh" else {})}
    return _checked(tr, Cell(scope, "gru", config, "gru_cell", ((scope, "", "gru"),)), anchor)


def _gru_block(tr: Translator, op: tf.Operation) -> Cell:
    """contrib's GRUBlockCell: the `GRUBlockCell` op over `w_ru`, `w_c`, `b_ru`, `b_c`."""
    w_ru, w_c, b_ru, b_c = (_variable(tr, t) for t in op.inputs[2:6])
    scope = (w_ru or "").removesuffix("/w_ru")
    if [w_ru, w_c, b_ru, b_c] != [f"{scope}/{n}" for n in ("w_ru", "w_c", "b_ru", "b_c")]:
        raise Unsupported("GRUBlockCell(weights not named <cell>/w_ru, w_c, b_ru, b_c)", op.name)
    config = {"class": "GRU", "units": _shape(tr.graph, b_c)[0], "reset_after": False}
    return _checked(tr, Cell(scope, "gru", config, "gru_cell", ((scope, "", "gru_block"),)), op)


def _checked(tr: Translator, cell: Cell, anchor: tf.Operation) -> Cell:
    """`cell`, unless its scope holds variables it does not use (a cell `auto` does not know)."""
    used = {f"{cell.scope}/{s}" for s in ("kernel", "bias", "gates/kernel", "gates/bias", "candidate/kernel",
                                           "candidate/bias", "w_ru", "w_c", "b_ru", "b_c")}
    used |= {var for var, _, _ in cell.rules}
    extra = sorted(op.name for op in tr.graph.get_operations() if op.type in VARIABLE_OPS
                   and op.name.startswith(cell.scope + "/") and op.name not in used and not is_optimizer_slot(op.name))
    if extra:
        raise Unsupported("rnn cell with " + ", ".join(extra), anchor.name)
    return cell


# -- dynamic_rnn: the while loop -----------------------------------------------------------------


def loop_of(tr: Translator, exit_or_flow: tf.Tensor) -> Recurrence:
    """The recurrence of the while loop an `Exit` leaves (the analysis kept per translation)."""
    frame = exit_or_flow.op.inputs[0].op.inputs[0].op.inputs[0].op.get_attr("frame_name").decode()
    memo = _memo(tr)
    if ("loop", frame) not in memo:
        memo["loop", frame] = _analysed(lambda: _loop(tr, frame, exit_or_flow))
    if isinstance(memo["loop", frame], Unsupported):
        raise memo["loop", frame]
    return memo["loop", frame]


def _loop(tr: Translator, frame: str, exit_op: tf.Tensor) -> Recurrence:
    body = _scope(exit_op.op)
    ops = [op for op in tr.graph.get_operations() if op.name.startswith(body)]
    enters = [op for op in ops if op.type == "Enter" and op.get_attr("frame_name").decode() == frame]
    variables = [e for e in enters if not e.get_attr("is_constant")]
    where = exit_op.op.name
    flows = [e for e in variables if e.inputs[0].op.type == "TensorArrayV3"]
    states = [e for e in variables if e not in flows and e.inputs[0].dtype.is_floating]
    reads, writes = ([op for op in ops if op.type == t] for t in ("TensorArrayReadV3", "TensorArrayWriteV3"))
    if len(flows) != 1 or len(reads) != 1 or len(writes) != 1:
        raise Unsupported("while loop (not a dynamic_rnn with one input and one output)", where)
    scatter = _consumer(_through(reads[0].inputs[0]).op.outputs[0], "TensorArrayScatterV3")
    if scatter is None:
        raise Unsupported("while loop (input not a TensorArray scatter)", where)
    inputs, time_major = scatter.inputs[2], True
    if inputs.op.type == "Transpose" and tr.static(inputs.op.inputs[1]) is not None \
            and list(tr.static(inputs.op.inputs[1])) == [1, 0, 2]:
        inputs, time_major = inputs.op.inputs[0], False
    checks = [op for op in ops if op.type == "GreaterEqual" and op.inputs[1].op.type == "Enter"]
    lengths = _through(checks[0].inputs[1]) if checks else None
    inputs, backwards = _unreversed(tr, inputs, time_major, lengths, where)
    anchors = [op for op in ops if op.type in CELL_OPS or (op.type == "MatMul" and _is_kernel(tr, op))]
    if not anchors:
        raise Unsupported("dynamic_rnn(cell)", where)
    cells = tuple(cell_of(tr, a) for a in anchors)
    if sum(len(TF1_STATES[c.kind]) for c in cells) != len(states):
        raise Unsupported("dynamic_rnn(state)", where)
    final, rest, below = [], iter(states), reads[0].outputs[0]
    for cell, anchor in zip(cells, anchors):
        entered = {name: next(rest) for name in TF1_STATES[cell.kind]}
        if not all(_is_zero(tr, e.inputs[0]) for e in entered.values()):
            raise Unsupported("dynamic_rnn(initial_state)", where)
        merges = {name: e.outputs[0].consumers()[0] for name, e in entered.items()}
        switches = {name: _consumer(m.outputs[0], "Switch") for name, m in merges.items()}
        body_h = _consumer(switches["h"].outputs[1], *IDENTITY_OPS)
        if body_h is None or _h_prev(anchor).name != body_h.outputs[0].name or _x(anchor).name != below.name:
            raise Unsupported("dynamic_rnn(state layout, or a cell wrapped in ops of its own)", where)
        below = _unselected(merges["h"].inputs[1].op.inputs[0])  # the new h, the next cell's input
        final.append({name: _consumer(s.outputs[0], "Exit").outputs[0] for name, s in switches.items()})
    if _unselected(writes[0].inputs[2]).name != below.name:
        raise Unsupported("dynamic_rnn(outputs not the top cell's)", where)
    return Recurrence(cells, inputs, time_major, lengths, backwards, tuple(final))


def _unselected(tensor: tf.Tensor) -> tf.Tensor:
    """A value the loop body hands on, before `sequence_length`'s `Select` (zeros or the state kept past
    the length)."""
    return tensor.op.inputs[2] if tensor.op.type == "Select" else tensor


def _is_kernel(tr: Translator, matmul: tf.Operation) -> bool:
    """A MatMul reading a cell's main kernel (not a projection's or a GRU candidate's)."""
    var = _variable(tr, matmul.inputs[1])
    return bool(var) and var.endswith("/kernel") and not var.endswith(("/projection/kernel", "/candidate/kernel"))


def _h_prev(anchor: tf.Operation) -> tf.Tensor:
    """The previous output a cell's step reads: the second half of its `concat([x, h])`, or a fused op's."""
    if anchor.type == "LSTMBlockCell":
        return anchor.inputs[2]
    if anchor.type == "GRUBlockCell":
        return anchor.inputs[1]
    return anchor.inputs[0].op.inputs[1]


def _x(anchor: tf.Operation) -> tf.Tensor:
    return anchor.inputs[0] if anchor.type in CELL_OPS else anchor.inputs[0].op.inputs[0]


def _unreversed(tr: Translator, inputs: tf.Tensor, time_major: bool, lengths: tf.Tensor | None,
                where: str) -> tuple[tf.Tensor, bool]:
    """(the sequence before reversal, whether the loop reads it reversed): bidirectional_dynamic_rnn's
    backward half reads `ReverseSequence(x, lengths)`, or `ReverseV2(x)` without lengths."""
    op, axis = inputs.op, 0 if time_major else 1
    if op.type == "ReverseSequence" and op.get_attr("seq_dim") == axis and op.get_attr("batch_dim") == 1 - axis:
        if lengths is None or tr.resolve(op.inputs[1]).name != tr.resolve(lengths).name:
            raise Unsupported("dynamic_rnn(input reversed by other lengths)", where)
        return op.inputs[0], True
    if op.type == "ReverseV2" and _axes(tr, op.inputs[1]) == [axis]:
        if lengths is not None:
            raise Unsupported("dynamic_rnn(input reversed whole, with sequence_length)", where)
        return op.inputs[0], True
    return inputs, False


def _axes(tr: Translator, tensor: tf.Tensor) -> list[int] | None:
    value = tr.static(tensor)
    return None if value is None else [int(a) for a in np.ravel(value)]


# -- static_rnn: the unrolled steps --------------------------------------------------------------


def static_of(tr: Translator, tensor: tf.Tensor) -> tuple[Recurrence, int] | None:
    """(the static_rnn recurrence, step) when `tensor` is a cell's output at that step, (…, -1) for its
    final cell state; None when it is none."""
    memo = _memo(tr)
    if "static" not in memo:
        memo["static"] = _statics(tr)
    found = memo["static"].get(tensor.name)
    if isinstance(found, Unsupported):
        raise found
    return found


def _statics(tr: Translator) -> dict[str, Any]:
    """Every static_rnn cell of the graph: its readers of the kernel outside any loop, first reading a zero
    state. Tensor name -> (recurrence, step); a cell that cannot be translated: its ops -> Unsupported."""
    order = {op.name: i for i, op in enumerate(tr.graph.get_operations())}
    kernel_input = {"LSTMBlockCell": 3, "GRUBlockCell": 2, "MatMul": 1}
    by_kernel: dict[str, list[tf.Operation]] = {}
    for op in tr.graph.get_operations():
        if op.type in CELL_OPS or (op.type == "MatMul" and op.inputs[0].op.type == "ConcatV2" and _is_kernel(tr, op)):
            if var := tr.variable(op.inputs[kernel_input[op.type]]):  # not through a loop's Enter
                by_kernel.setdefault(var, []).append(op)
    found: dict[str, Any] = {}
    for anchors in by_kernel.values():
        if not _is_zero(tr, _h_prev(anchors[0])):
            continue
        try:
            rec = _static(tr, anchors, order)
        except Unsupported as exc:
            scope = _scope(anchors[0])
            found |= {out.name: exc for op in tr.graph.get_operations() if op.name.startswith(scope)
                      for out in op.outputs}
            continue
        found |= {t.name: (rec, i) for i, t in enumerate(rec.steps)}
        found |= {t.name: (rec, -1) for name, t in rec.final[0].items() if name == "c"}
        for pack in {c for t in rec.steps for c in t.consumers() if c.type == "Pack"}:
            if [t.name for t in pack.inputs] == [t.name for t in rec.steps] and pack.get_attr("axis") in (0, 1):
                found[pack.outputs[0].name] = (rec, pack.get_attr("axis"))
    return found


def _static(tr: Translator, anchors: list[tf.Operation], order: dict[str, int]) -> Recurrence:
    """One static_rnn cell over its steps (`anchors`, in order)."""
    cell, where = cell_of(tr, anchors[0]), anchors[0].name
    if len(anchors) < 2:
        raise Unsupported("static_rnn(one step)", where)
    names = TF1_STATES[cell.kind]
    if anchors[0].type in CELL_OPS:
        outputs = {"c": 1, "h": 6} if anchors[0].type == "LSTMBlockCell" else {"h": 3}
        states = [{n: a.outputs[outputs[n]] for n in names} for a in anchors]
    else:
        states = _matmul_states(tr, anchors, order, names, where)
    steps = tuple(s["h"] for s in states)
    for prev, anchor in zip(steps, anchors[1:]):
        if _through(_h_prev(anchor)).name != prev.name:
            raise Unsupported("static_rnn(sequence_length or state not recognised)", where)
    return Recurrence((cell,), tuple(_x(a) for a in anchors), False, None, False, (states[-1],), steps)


def _matmul_states(tr: Translator, anchors: list[tf.Operation], order: dict[str, int], names: tuple[str, ...],
                   where: str) -> list[dict[str, tf.Tensor]]:
    """Each step's state: what its ops hand the next step's (h: the next `concat`'s second half), the
    last step's at the same places as the step before it. A step's ops: from its `concat` on, constants
    aside (a cell makes some before its `concat`)."""
    scope = _scope(anchors[0])
    cell_ops = sorted((op for op in tr.graph.get_operations() if op.name.startswith(scope) and op.inputs),
                      key=lambda op: order[op.name])
    starts = [order[a.inputs[0].op.name] for a in anchors] + [len(order)]
    steps = [[op for op in cell_ops if starts[t] <= order[op.name] < starts[t + 1]] for t in range(len(anchors))]
    steps[-1] = steps[-1][:len(steps[-2])]
    if [op.type for op in steps[-1]] != [op.type for op in steps[-2]]:
        raise Unsupported("static_rnn(steps differ)", where)
    states = []
    for t in range(len(anchors) - 1):
        inside = {op.name for op in steps[t + 1]}
        handed = [out for op in steps[t] for out in op.outputs if any(c.name in inside for c in out.consumers())]
        h = _through(_h_prev(anchors[t + 1]))
        others = [out for out in handed if out.name != h.name]
        if len(others) != len(names) - 1 or h.op not in steps[t]:
            raise Unsupported("static_rnn(sequence_length or state not recognised)", where)
        states.append(dict(zip(names, [*others, h])))
    position = {op.name: i for i, op in enumerate(steps[-2])}
    states.append({n: steps[-1][position[t.op.name]].outputs[t.value_index] for n, t in states[-1].items()})
    return states


# -- emitting --------------------------------------------------------------------------------------
# A layer returns what has been read of it so far: a lower layer of a stack its sequence, the top one
# nothing until its outputs or a state are asked for (`_returning`). When states are first asked of a layer
# that already returned its sequence, the nodes reading it are pointed at a `Pick` of the sequence.


def layers(tr: Translator, rec: Recurrence) -> list[str]:
    """The layer node of each cell, bottom first (emitted with its rules on first use)."""
    names = [layer_name(c.scope) for c in rec.cells]
    if _node(tr, names[0]) is not None:
        return names
    below = _input_node(tr, rec, names[0])
    lengths = tr.node(rec.lengths) if rec.lengths is not None else None
    for k, (cell, name) in enumerate(zip(rec.cells, names)):
        flags = {"return_sequences": k < len(names) - 1, "go_backwards": rec.backwards}
        config = {**cell.config, **{flag: True for flag, on in flags.items() if on}}
        prefix = f"{name}/{cell.keras_cell}"
        if lengths is None:
            tr.add(name, [below], **config)
        else:
            inner = {"class": config.pop("class"), **config, "zero_output_for_mask": True, "name": "rnn"}
            tr.add(name, [below, lengths], **{"class": "ferry.MaskedRNN"}, layer=inner)
            prefix = f"{name}/rnn/{cell.keras_cell}"
        for var, weight, transform in cell.rules:
            tr.bind(var, f"{prefix}/{weight}" if weight else prefix, transform)
        if k < len(names) - 1:
            below = name
            if rec.backwards:  # the next layer runs backwards too: hand it the outputs in input order
                below = tr.add(f"{name}.reversed", [below], op="flip", axis=1)
    return names


def _node(tr: Translator, name: str) -> dict[str, Any] | None:
    return next((n for n in tr.out.nodes if n["name"] == name), None)


def _returning(tr: Translator, name: str, flag: str) -> None:
    """Make layer `name` return its sequence (`return_sequences`) or its states (`return_state`)."""
    node = _node(tr, name)
    config = node.get("layer", node)  # a MaskedRNN's: its layer's
    if config.get(flag):
        return
    config[flag] = True
    if flag == "return_state" and config.get("return_sequences"):  # output 0 of a list now: re-point its readers
        at = tr.out.nodes.index(node) + 1
        tr.out.nodes.insert(at, {"name": f"{name}.sequence", "class": "ferry.Pick", "inputs": [name], "index": 0})
        for later in tr.out.nodes[at + 1:]:
            later["inputs"] = [f"{name}.sequence" if i == name else i for i in later["inputs"]]
        for names in (tr.names, tr.out.outputs):
            names.update({k: f"{name}.sequence" for k, v in names.items() if v == name})


def _pick(tr: Translator, layer: str, index: int, what: str) -> str:
    name = f"{layer}.{what}"
    if _node(tr, name) is None:
        tr.add(name, [layer], **{"class": "ferry.Pick"}, index=index)
    return name


def _input_node(tr: Translator, rec: Recurrence, first: str) -> str:
    """The bottom layer's input, batch-major: the sequence (transposed when time-major), another static
    cell's outputs, or each step's input stacked."""
    if isinstance(rec.inputs, tf.Tensor):
        x = tr.node(rec.inputs)
        return tr.add(f"{first}.inputs", [x], op="transpose", axes=[1, 0, 2]) if rec.time_major else x
    unpack = rec.inputs[0].op
    if unpack.type == "Unpack" and [t.name for t in rec.inputs] == [t.name for t in unpack.outputs] \
            and unpack.inputs[0].shape.rank == 3 and unpack.get_attr("axis") in (0, 1):
        x = tr.node(unpack.inputs[0])
        return tr.add(f"{first}.inputs", [x], op="transpose", axes=[1, 0, 2]) if unpack.get_attr("axis") == 0 else x
    below = static_of(tr, rec.inputs[0])
    if below is not None and [t.name for t in below[0].steps] == [t.name for t in rec.inputs]:
        return sequence(tr, below[0])
    steps = [tr.add(f"{first}.inputs_{t}", [tr.node(x)], op="expand_dims", axis=1) for t, x in enumerate(rec.inputs)]
    return tr.add(f"{first}.inputs", steps, **{"class": "Concatenate"}, axis=1)


def sequence(tr: Translator, rec: Recurrence) -> str:
    """The top cell's outputs, batch-major, in the order the loop ran (reversed for a backward loop)."""
    top = layers(tr, rec)[-1]
    _returning(tr, top, "return_sequences")
    config = _node(tr, top).get("layer", _node(tr, top))
    return _pick(tr, top, 0, "sequence") if config.get("return_state") else top


def unreversed(tr: Translator, rec: Recurrence) -> str:
    """A backward loop's outputs flipped back into input order."""
    top = sequence(tr, rec)
    name = f"{layers(tr, rec)[-1]}.unreversed"
    return name if _node(tr, name) is not None else tr.add(name, [top], op="flip", axis=1)


def state(tr: Translator, rec: Recurrence, k: int, which: str) -> str:
    """Cell `k`'s final state `which` (c or h)."""
    name = layers(tr, rec)[k]
    _returning(tr, name, "return_state")
    return _pick(tr, name, 1 + KERAS_STATES[rec.cells[k].kind].index(which), which)


# -- the fusions (fusions.py) and the fused LSTM -------------------------------------------------------


def rnn_output(tr: Translator, op: tf.Operation) -> Recurrence | None:
    """A dynamic_rnn's outputs: `Transpose(TensorArrayGatherV3)` to batch-major, as dynamic_rnn writes it."""
    gathered = tr.resolve(op.inputs[0]).op
    perm = tr.static(op.inputs[1])
    if gathered.type != "TensorArrayGatherV3" or perm is None or list(perm) != [1, 0, 2]:
        return None
    return loop_of(tr, gathered.inputs[2])


def dynamic_rnn(tr: Translator, op: tf.Operation, rec: Recurrence) -> str:
    """The loop's outputs in loop order (refused for a loop reading `ReverseSequence`: they are not a
    Keras layer's)."""
    if rec.backwards and rec.lengths is not None:
        raise Unsupported("bidirectional_dynamic_rnn(backward outputs read unreversed)", op.name)
    return sequence(tr, rec)


def rnn_output_time_major(tr: Translator, op: tf.Operation) -> Recurrence | None:
    """A time-major dynamic_rnn's outputs: the `TensorArrayGatherV3` itself."""
    return loop_of(tr, op.inputs[2]) if op.inputs[2].op.type == "Exit" else None


def dynamic_rnn_time_major(tr: Translator, op: tf.Operation, rec: Recurrence) -> str:
    seq = dynamic_rnn(tr, op, rec)
    return tr.add(f"{seq}.time_major", [seq], op="transpose", axes=[1, 0, 2])


def rnn_state(tr: Translator, op: tf.Operation) -> tuple[Recurrence, int, str] | None:
    """A loop's `Exit` that is a cell's final state: (recurrence, cell, c or h)."""
    rec = loop_of(tr, op.outputs[0])
    for k, final in enumerate(rec.final):
        for which, tensor in final.items():
            if tensor.op is op:
                return rec, k, which
    raise Unsupported("Exit (not a cell state)", op.name)


def final_state(tr: Translator, op: tf.Operation, found: tuple[Recurrence, int, str]) -> str:
    return state(tr, *found)


def reversed_output(tr: Translator, op: tf.Operation) -> tuple[Recurrence, bool] | None:
    """The backward half's outputs reversed back (`ReverseSequence` by the loop's lengths, or `ReverseV2`
    when it has none): (recurrence, whether they are time-major)."""
    inner = tr.resolve(op.inputs[0]).op
    time_major = inner.type == "TensorArrayGatherV3"
    if inner.type == "Transpose" and (found := rnn_output(tr, inner)) is not None:
        rec = found
    elif time_major and inner.inputs[2].op.type == "Exit":
        rec = loop_of(tr, inner.inputs[2])
    else:
        return None
    axis = 0 if time_major else 1
    if not rec.backwards:
        return None
    if op.type == "ReverseSequence":
        same = rec.lengths is not None and tr.resolve(op.inputs[1]).name == tr.resolve(rec.lengths).name
        ok = same and op.get_attr("seq_dim") == axis and op.get_attr("batch_dim") == 1 - axis
    else:
        value = tr.static(op.inputs[1])
        ok = rec.lengths is None and value is not None and list(np.ravel(value)) == [axis]
    return (rec, time_major) if ok else None


def reversed_back(tr: Translator, op: tf.Operation, found: tuple[Recurrence, bool]) -> str:
    rec, time_major = found
    out = unreversed(tr, rec)
    return tr.add(f"{out}.time_major", [out], op="transpose", axes=[1, 0, 2]) if time_major else out


def static_output(tr: Translator, op: tf.Operation) -> tuple[Recurrence, int, tf.Tensor] | None:
    """A static_rnn cell's output at a step, its final c, or its outputs stacked (`Pack`)."""
    found = static_of(tr, op.outputs[0])
    return None if found is None else (*found, op.outputs[0])


def static_rnn(tr: Translator, op: tf.Operation, found: tuple[Recurrence, int, tf.Tensor]) -> str:
    """The final state (the last step's output, or c), an earlier step's output (a slice of the sequence),
    or the stacked outputs (the sequence, transposed when stacked on axis 0)."""
    rec, step, tensor = found
    if op.type == "Pack":
        seq = sequence(tr, rec)
        return seq if step == 1 else tr.add(f"{seq}.time_major", [seq], op="transpose", axes=[1, 0, 2])
    if step in (-1, len(rec.steps) - 1):
        return state(tr, rec, 0, "c" if step == -1 else "h")
    seq = sequence(tr, rec)
    return tr.add(f"{seq}.step_{step}", [seq], op="take", indices=step, axis=1)


@handles(*CELL_OPS, reads_variables=True)
def static_block_cell(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """A static_rnn step of contrib's LSTMBlockCell / GRUBlockCell: its output (h) or cell state (c)."""
    found = static_of(tr, tensor)
    if found is None:
        raise Unsupported(f"{op.type} (not a static_rnn step)", op.name)
    return static_rnn(tr, op, (*found, tensor))


@handles("BlockLSTM", reads_variables=True)
def block_lstm(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """contrib's LSTMBlockFusedCell (time-major, all steps, no sequence lengths): its outputs `h`."""
    if tensor.value_index != 6:
        raise Unsupported("BlockLSTM(outputs other than h)", op.name)
    seq = sequence(tr, _fused(tr, op))
    return tr.add(f"{seq}.time_major", [seq], op="transpose", axes=[1, 0, 2])


def fused_state(tr: Translator, op: tf.Operation) -> tuple[Recurrence, str] | None:
    """`outputs[-1]` or `cell_states[-1]` of a `BlockLSTM`, as LSTMBlockFusedCell returns its final state:
    (recurrence, h or c)."""
    source = tr.resolve(op.inputs[0])
    if source.op.type != "BlockLSTM" or source.value_index not in (1, 6):
        return None
    begin, strides = tr.static(op.inputs[1]), tr.static(op.inputs[3])
    masks = [op.get_attr(m) for m in ("begin_mask", "ellipsis_mask", "new_axis_mask", "shrink_axis_mask")]
    last = [[-1], [source.shape[0] - 1]]
    if begin is None or list(begin) not in last or list(strides) != [1] or masks != [0, 0, 0, 1]:
        return None
    return _fused(tr, source.op), "c" if source.value_index == 1 else "h"


def fused_final(tr: Translator, op: tf.Operation, found: tuple[Recurrence, str]) -> str:
    return state(tr, found[0], 0, found[1])


def _fused(tr: Translator, op: tf.Operation) -> Recurrence:
    """The recurrence of a `BlockLSTM` op: one cell over its time-major input, from a zero state, every step."""
    x, steps = op.inputs[1], tr.static(op.inputs[0])
    if steps is None or x.shape[0] is None or int(steps) < x.shape[0]:
        raise Unsupported("BlockLSTM(seq_len_max below the steps)", op.name)
    if not (_is_zero(tr, op.inputs[2]) and _is_zero(tr, op.inputs[3])):
        raise Unsupported("BlockLSTM(initial state)", op.name)
    memo = _memo(tr)
    if ("fused", op.name) not in memo:
        memo["fused", op.name] = Recurrence((cell_of(tr, op),), x, True, None, False,
                                            ({"c": op.outputs[1], "h": op.outputs[6]},))
    return memo["fused", op.name]


# -- the analyses, once per translation ------------------------------------------------------------

_MEMOS: weakref.WeakKeyDictionary[Translator, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _memo(tr: Translator) -> dict[Any, Any]:
    return _MEMOS.setdefault(tr, {})


def _analysed(analyse) -> Recurrence | Unsupported:
    try:
        return analyse()
    except Unsupported as exc:
        return exc
