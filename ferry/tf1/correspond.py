"""Which TF1 tensor computes what a Keras layer of a hand-written spec computes (verify's search for the
first divergent layer; an `auto` model records its own correspondence when it is translated).

The rule: a Keras layer corresponds to the TF1 op that reads its variables last. Its variables are the
checkpoint keys the name map assigned to its weights; the ops that read them (through `read` identities,
resource reads and the `Switch`/`Enter` of control flow) are looked for among the ops the spec's outputs
are computed from, on the branches taken when only the spec's inputs are fed (an `is_training` switch
left at its default). Of those readers, the last in topological order gives the layer's output:

- a Keras layer with a fused activation (`Dense(..., activation="relu")`) is matched to the activation op
  reading that output (`Relu`), as TF1 writes it; none there: no correspondence;
- readers inside a `dynamic_rnn` while loop (an LSTM's or GRU's kernel) stand for the loop: the layer's
  output is the loop's output sequence (`Transpose` of its `TensorArrayGatherV3`), its input the loop's
  input; another while loop: no correspondence.

The layer's inputs are the readers' other inputs that no reader computes (a `MatMul`'s `x`, not a
`BiasAdd`'s). A layer whose variables no live op reads has no correspondence, and the reason is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from ferry.facts import IDENTITY_OPS, PARTITION, VALUE_PASS_OPS, VARIABLE_OPS

# Keras activation name -> the TF1 op computing it.
ACTIVATION_OPS = {"relu": "Relu", "relu6": "Relu6", "elu": "Elu", "selu": "Selu", "softmax": "Softmax",
                  "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus", "softsign": "Softsign",
                  "leaky_relu": "LeakyRelu", "log_softmax": "LogSoftmax", "exponential": "Exp"}
_SWITCH = frozenset({"Switch", "RefSwitch"})


@dataclass(frozen=True)
class Counterpart:
    """The TF1 tensors of one Keras layer: its output, and its inputs in the layer's order (empty: unknown)."""

    output: str
    op_type: str
    inputs: tuple[str, ...]


class InferenceGraph:
    """The ops a graph's `outputs` are computed from when only `fed` tensors are fed: in topological order
    (a while loop's back edges cut), which of their outputs are live (control flow with a constant
    predicate takes one branch), and which live ops read which variables."""

    def __init__(self, graph: tf.Graph, fed: list[str], outputs: list[str]):
        self.graph = graph
        self.fed = {graph.get_tensor_by_name(t).op.name for t in fed}
        self.fed_tensors = {graph.get_tensor_by_name(t).name for t in fed}
        self.order = self._topological([graph.get_tensor_by_name(t).op for t in outputs])
        self.index = {op.name: i for i, op in enumerate(self.order)}
        self.dead = self._dead_tensors()
        self.readers: dict[str, list[tf.Operation]] = {}  # variable -> the live ops reading it, in order
        self.frames: dict[str, str] = {}  # reader op -> the while loop (frame) it reads the variable in
        for op in self.order:
            if op.type in VALUE_PASS_OPS or not self.live(op):  # a `read`, a `Switch`: passing the value on
                continue
            for tensor in op.inputs:
                source, frame = _source(tensor)
                if source.type in VARIABLE_OPS or source.type == "Const":
                    name = (m.group(1) if (m := PARTITION.fullmatch(source.name)) else source.name)
                    self.readers.setdefault(name, []).append(op)
                    if frame:
                        self.frames[op.name] = frame

    def _topological(self, roots: list[tf.Operation]) -> list[tf.Operation]:
        """Post-order of a depth-first walk over data inputs from `roots` (stopping at fed tensors); an
        input already on the walk's path (a loop's back edge) is skipped."""
        order: list[tf.Operation] = []
        state: dict[str, int] = {}  # 1: on the path, 2: done
        for root in roots:
            stack: list[tuple[tf.Operation, bool]] = [(root, False)]
            while stack:
                op, done = stack.pop()
                if done:
                    state[op.name] = 2
                    order.append(op)
                    continue
                if op.name in state:
                    continue
                state[op.name] = 1
                stack.append((op, True))
                if op.name not in self.fed:
                    stack.extend((t.op, False) for t in reversed(op.inputs) if t.op.name not in state)
        return order

    def _dead_tensors(self) -> set[str]:
        """Tensors on a branch not taken: a `Switch` whose predicate is constant passes its data to one output
        only; a `Merge` is dead when all its inputs are; any other op when one of its inputs is."""
        dead: set[str] = set()
        for op in self.order:
            if op.name in self.fed:
                continue
            inputs = [t.name in dead for t in op.inputs]
            if op.type in _SWITCH:
                taken = None if inputs[0] else self._static_bool(op.inputs[1])
                for i, out in enumerate(op.outputs):
                    if inputs[0] or (taken is not None and i != int(taken)):
                        dead.add(out.name)
                continue
            if op.type in ("Merge", "RefMerge"):  # an input not reached yet (a loop's back edge) counts as live
                gone = all(t.name in dead for t in op.inputs if t.op.name in self.index)
            else:
                gone = any(inputs)
            if gone:
                dead.update(out.name for out in op.outputs)
        return dead

    def _static_bool(self, tensor: tf.Tensor) -> bool | None:
        """A predicate's value when constant (through identities, an unfed placeholder's default, `LogicalNot`)."""
        op = tensor.op
        if op.type in IDENTITY_OPS:
            return self._static_bool(op.inputs[0])
        if op.type == "PlaceholderWithDefault" and tensor.name not in self.fed_tensors:
            return self._static_bool(op.inputs[0])
        if op.type == "LogicalNot":
            value = self._static_bool(op.inputs[0])
            return None if value is None else not value
        if op.type != "Const":
            return None
        value = tf.make_ndarray(op.get_attr("value"))
        return bool(value) if value.size == 1 else None

    def live(self, op: tf.Operation) -> bool:
        return op.name in self.index and any(out.name not in self.dead for out in op.outputs)

    def consumers(self, tensor: tf.Tensor) -> list[tf.Operation]:
        """The live ops reading `tensor`, looking through identities."""
        found = []
        for user in tensor.consumers():
            if not self.live(user):
                continue
            if user.type in IDENTITY_OPS:
                found += self.consumers(user.outputs[0])
            else:
                found.append(user)
        return found

    def counterpart(self, variables: list[str], activation: str | None) -> Counterpart | str:
        """The TF1 tensors of a Keras layer whose weights come from `variables`, with a fused `activation`
        (a Keras name; None or `linear`: none); or why there are none."""
        readers = sorted({op.name: op for v in variables for op in self.readers.get(v, [])}.values(),
                         key=lambda op: self.index[op.name])
        if not readers:
            return f"no op computing the outputs reads its TF1 variables ({', '.join(variables[:3])})"
        frames = {self.frames[op.name] for op in readers if op.name in self.frames}
        if frames:
            return self._loop(sorted(frames)[0])
        output = readers[-1].outputs[0]
        if activation not in (None, "linear"):
            want = ACTIVATION_OPS.get(activation)
            applied = [op for op in self.consumers(output) if op.type == want]
            if len(applied) != 1:
                return (f"Keras applies {activation!r} inside the layer; TF1 applies no single "
                        f"{want or activation} to {output.name}")
            output = applied[0].outputs[0]
        return Counterpart(output.name, output.op.type, self._entries(readers))

    def _entries(self, readers: list[tf.Operation]) -> tuple[str, ...]:
        """The readers' data inputs computed by no reader (the layer's inputs), in order, without repeats."""
        names = {op.name for op in readers}
        tainted: set[str] = set()
        for op in self.order[self.index[readers[0].name]:]:
            if op.name in names or any(t.op.name in tainted for t in op.inputs):
                tainted.add(op.name)
        entries: list[str] = []
        for op in readers:
            for tensor in op.inputs:
                source, _ = _source(tensor)
                if source.type in VARIABLE_OPS or source.type == "Const" or tensor.op.name in tainted:
                    continue
                name = self._resolve(tensor).name
                if name not in entries:
                    entries.append(name)
        return tuple(entries)

    def _resolve(self, tensor: tf.Tensor) -> tf.Tensor:
        """`tensor` seen through identities and `Switch`es (the value they pass on), up to a fed tensor."""
        while tensor.name not in self.fed_tensors and (tensor.op.type in IDENTITY_OPS or tensor.op.type in _SWITCH):
            tensor = tensor.op.inputs[0]
        return tensor

    def _loop(self, frame: str) -> Counterpart | str:
        """A `dynamic_rnn` whose loop is `frame`: its output sequence and its input."""
        scope = frame.rsplit("/while/", 1)[0]
        for op in self.order:
            if (op.type == "Transpose" and op.name.startswith(scope + "/") and self.live(op)
                    and self._resolve(op.inputs[0]).op.type == "TensorArrayGatherV3"):
                entry = self.order[self.index[f"{scope}/transpose"]] if f"{scope}/transpose" in self.index else None
                inputs = (self._resolve(entry.inputs[0]).name,) if entry is not None else ()
                return Counterpart(op.outputs[0].name, op.type, inputs)
        return f"its TF1 variables are read inside the while loop {frame!r}, which is no dynamic_rnn"


def _source(tensor: tf.Tensor) -> tuple[tf.Operation, str | None]:
    """The op whose value `tensor` passes on unchanged (a variable behind its `read`), and the while loop
    (frame name) it enters on the way, if any."""
    op, frame = tensor.op, None
    while op.type in VALUE_PASS_OPS and op.inputs:
        if op.type in ("Enter", "RefEnter"):
            frame = op.get_attr("frame_name").decode()
        op = op.inputs[0].op
    return op, frame
