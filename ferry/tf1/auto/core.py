"""The translator: walks the inference graph from the outputs back and dispatches each op to the first
fusion rooted at it that matches (`fusions.FUSIONS`), else to the handler registered for its type.

An op with no translation (or one without a handler for its variable inputs), and a form of an op its handler
refuses (`Unsupported`), becomes a `ferry.RawOp` node calling `tf.raw_ops` itself (`fallback.py`) when it can
run that way (stateless, no control flow), listed in `Translation.fallbacks`; any other failure to
translate a node, expected or not, is an `Unsupported` naming the op type and the node, and `translate`
raises them all at once as `UnsupportedGraph`.

Looked through or folded on the way (`FOLDED`): identities, variables and their reads, constants,
placeholders (the spec's inputs), control flow with a constant predicate (`Switch`/`Merge`) and `Shape`
(its arithmetic is evaluated at translation by the handlers that read a shape: `values.shape_value`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from ferry.facts import IDENTITY_OPS, VARIABLE_OPS
from ferry.tf1.auto.fallback import fallback, refusal
from ferry.tf1.auto.fusions import FUSIONS
from ferry.tf1.auto.registry import HANDLERS, Unsupported, layer_name
from ferry.tf1.formats import weight_constants

MAX_CONST = 4096  # elements: larger constants cannot live in a spec
# Op types never translated into a node of their own: looked through, folded, or the spec's inputs.
FOLDED = IDENTITY_OPS | VARIABLE_OPS | frozenset(
    {"ReadVariableOp", "Const", "Placeholder", "PlaceholderWithDefault", "Switch", "Merge", "Shape"})


class UnsupportedGraph(ValueError):
    """Ops of the inference graph that `auto` cannot translate; one node named per op type."""

    def __init__(self, found: dict[str, str], meta: str):
        self.found = found
        listed = "; ".join(f"{t} (e.g. {n})" for t, n in sorted(found.items()))
        super().__init__(f"{meta}: `architecture: auto` cannot translate op types: {listed}. Write the model "
                         "as `architecture: {factory: ...}` (or a `graph`) instead.")


class Dead(Exception):
    """A tensor on a control-flow branch never taken at inference."""


@dataclass
class Translation:
    """The derived architecture: graph nodes, outputs, and the name-map rules binding every variable read."""

    nodes: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    tensors: dict[str, str] = field(default_factory=dict)  # node -> the TF1 tensor it computes (verify compares them)
    fallbacks: dict[str, str] = field(default_factory=dict)  # op type run as a `ferry.RawOp` -> one node

    def architecture(self) -> dict[str, Any]:
        return {"graph": {"nodes": self.nodes, "outputs": self.outputs}}


class Translator:
    """Walks the inference graph from the outputs and emits graph-form nodes."""

    def __init__(self, graph: tf.Graph, inputs: dict[str, str], meta: str):
        self.graph, self.meta = graph, meta
        self.out = Translation()
        self.names: dict[str, str] = {}  # tensor name -> node name
        self.unsupported: dict[str, str] = {}
        self.fallbacks: dict[str, str] = {}  # op type emitted as a `ferry.RawOp` -> one node
        self._alive: dict[str, bool] = {}
        self._frames: list[list[dict[str, Any]]] = []  # per op being emitted: the nodes and rules it added itself
        # a frozen graph's weights: the constants its layers read, bound by node name like variables
        has_variables = any(op.type in VARIABLE_OPS for op in graph.get_operations())
        self.weight_constants = set() if has_variables else set(weight_constants(graph))
        # tensor name -> serving name: a placeholder's output, or any tensor the graph is cut at (an
        # Estimator's `IteratorGetNext:0`), also as seen through identities
        self.inputs = {graph.get_tensor_by_name(t).name: name for name, t in inputs.items()}
        self.inputs.update({self.resolve(graph.get_tensor_by_name(t)).name: name for name, t in inputs.items()})

    # -- looking through the graph ---------------------------------------------------------------

    def static(self, tensor: tf.Tensor) -> np.ndarray | None:
        """The tensor's value if it is a constant (through identities and placeholder defaults)."""
        tensor = self.resolve(tensor)
        if tensor.op.type == "PlaceholderWithDefault" and tensor.name not in self.inputs:
            return self.static(tensor.op.inputs[0])
        if tensor.op.type == "LogicalNot":
            value = self.static(tensor.op.inputs[0])
            return None if value is None else np.logical_not(value)
        try:
            return tf.get_static_value(tensor)
        except (TypeError, ValueError):
            return None

    def resolve(self, tensor: tf.Tensor) -> tf.Tensor:
        """Look through identities and constant-predicate control flow; raise Dead on an untaken branch."""
        op = tensor.op
        if op.type in IDENTITY_OPS:
            return self.resolve(op.inputs[0])
        if op.type == "Switch":
            pred = self.static(op.inputs[1])
            if pred is None:
                raise Unsupported("Switch(non-constant predicate)", op.name)
            if tensor.value_index != int(bool(pred)):
                raise Dead(op.name)
            return self.resolve(op.inputs[0])
        if op.type == "Merge":
            alive = [r for r in (self._live(t) for t in op.inputs) if r is not None]
            if len(alive) != 1:
                raise Unsupported(f"Merge({len(alive)} live inputs)", op.name)
            return alive[0]
        return tensor

    def _live(self, tensor: tf.Tensor) -> tf.Tensor | None:
        """`tensor` resolved, or None when it depends on an untaken branch."""
        try:
            resolved = self.resolve(tensor)
        except Dead:
            return None
        if resolved.op.type in ("Merge", "Switch") or resolved.name in self.inputs:
            return resolved
        if resolved.op.name not in self._alive:
            self._alive[resolved.op.name] = all(self._live(t) is not None for t in resolved.op.inputs)
        return resolved if self._alive[resolved.op.name] else None

    def variable(self, tensor: tf.Tensor) -> str | None:
        """The variable a tensor reads (or, in a frozen graph, the weight constant), if any."""
        op = self.resolve(tensor).op
        if op.type in VARIABLE_OPS or op.name in self.weight_constants:
            return op.name
        if op.type == "ReadVariableOp" and op.inputs[0].op.type == "VarHandleOp":
            return op.inputs[0].op.name
        return None

    def const(self, tensor: tf.Tensor, what: str) -> Any:
        """The value of a constant operand (a list for arrays); Unsupported when not constant or too large."""
        value = self.static(tensor)
        if value is None:
            raise Unsupported(f"non-constant {what}", tensor.op.name)
        if np.size(value) > MAX_CONST:
            raise Unsupported(f"constant of {np.size(value)} elements (max {MAX_CONST})", tensor.op.name)
        return value.tolist() if isinstance(value, np.ndarray) else value

    # -- emitting ----------------------------------------------------------------------------------

    def node(self, tensor: tf.Tensor) -> str:
        """The graph node computing `tensor` (emitting it and its inputs first)."""
        try:
            tensor = self.resolve(tensor)
        except Unsupported as exc:
            self.unsupported.setdefault(exc.op_type, exc.node)
            return layer_name(tensor.op.name)
        except Dead:
            raise
        except Exception as exc:  # noqa: BLE001 - looking through it failed: named, never raw
            message = (str(exc).splitlines() or [""])[0][:200]
            self.unsupported.setdefault(f"{tensor.op.type}(failed to look through, {type(exc).__name__}: {message})",
                                        tensor.op.name)
            return layer_name(tensor.op.name)
        if tensor.name in self.names:
            return self.names[tensor.name]
        op = tensor.op
        if tensor.name in self.inputs:
            name = self.inputs[tensor.name]
        else:
            try:
                name = self._emit_named(op, tensor)
            except Unsupported as exc:
                self.unsupported.setdefault(exc.op_type, exc.node)
                name = layer_name(op.name)
                self.names[tensor.name] = name
                for upstream in op.inputs:  # keep walking, so every unsupported op type is listed at once
                    if self._plain(upstream):
                        self.node(upstream)
        self.names[tensor.name] = name
        return name

    def _plain(self, tensor: tf.Tensor) -> bool:
        """Neither a variable nor a constant: a tensor to walk on to. A while loop's `Switch` behind an
        unsupported `Exit` is not walked on (its predicate is not constant)."""
        try:
            return self.variable(tensor) is None and self.static(tensor) is None
        except Unsupported:
            return False

    def _emit_named(self, op: tf.Operation, tensor: tf.Tensor) -> str:
        """`emit`, with any error a handler did not foresee reported against this node, never raw."""
        try:
            return self.emit(op, tensor)
        except (Dead, Unsupported):
            raise
        except Exception as exc:  # a handler's bug or an odd attribute: named, never raw
            message = (str(exc).splitlines() or [""])[0][:200]
            raise Unsupported(f"{op.type}(translation failed, {type(exc).__name__}: {message})", op.name) from exc

    def emit(self, op: tf.Operation, tensor: tf.Tensor) -> str:
        """Translate `op`: the first fusion rooted at it that matches, else the handler of its type. Only
        handlers that read variables get ops with an input reading one; an op without a handler for it, or
        of a form its handler refuses, is run as a raw TF op (`fallback`) when it can be, or refused (a
        refused form: the handler's reason)."""
        self._frames.append([])
        try:
            for fusion in FUSIONS:
                if fusion.root == op.type and (matched := fusion.match(self, op)) is not None:
                    return fusion.emit(self, op, matched)
            handler = HANDLERS.get(op.type)
            if handler is None or (not handler.reads_variables and any(self.variable(i) for i in op.inputs)):
                return fallback(self, op, tensor)
            try:
                return handler.fn(self, op, tensor)
            except Unsupported as refused:
                if refusal(op, op_def_registry.get(op.type)) is not None:
                    raise  # stateful, control flow, ...: the handler's reason, as before
                self._discard()
                try:
                    return fallback(self, op, tensor)
                except Unsupported:
                    raise refused from None
        finally:
            self._frames.pop()

    def _discard(self) -> None:
        """Drop the nodes and rules the op being emitted added itself (not those of its inputs)."""
        own = {id(entry) for entry in self._frames[-1]}
        self.out.nodes[:] = [n for n in self.out.nodes if id(n) not in own]
        self.out.rules[:] = [r for r in self.out.rules if id(r) not in own]
        self._frames[-1].clear()

    def add(self, name: str, inputs: list[str], **spec: Any) -> str:
        """Append a node: name, `class` or `op`, inputs, then the arguments (defaults left out)."""
        kind = {k: spec.pop(k) for k in ("class", "op") if k in spec}
        if kind.get("class") in ("Conv2D", "DepthwiseConv2D"):  # Keras' defaults; pooling's differ
            for key in ("strides", "dilation_rate"):
                if spec.get(key) == [1, 1]:
                    del spec[key]
        node = {"name": name, **kind, "inputs": inputs, **spec}
        self.out.nodes.append(node)
        if self._frames:
            self._frames[-1].append(node)
        return name

    def unique(self, name: str, var: str) -> str:
        """`name`, or the variable's full path when the scope already named a layer (separable convs)."""
        return layer_name(var) if any(n["name"] == name for n in self.out.nodes) else name

    def bind(self, var: str, weight: str, transform: Any = None) -> None:
        """An exact name-map rule: checkpoint variable `var` -> Keras weight path `weight`."""
        rule = {"from": var, "to": weight, "match": "exact"}
        if transform:
            rule["transform"] = transform
        self.out.rules.append(rule)
        if self._frames:
            self._frames[-1].append(rule)


def translate(graph: tf.Graph, inputs: dict[str, str], outputs: dict[str, str], meta: str) -> Translation:
    """Translate the inference graph between `inputs` and `outputs` (serving name -> tensor name)."""
    tr = Translator(graph, inputs, meta)
    for tensor in tr.inputs:
        if graph.get_tensor_by_name(tensor).shape.rank is None:
            tr.unsupported.setdefault("input of unknown rank (give the placeholder a shape)", tensor.split(":")[0])
    for serving, tensor in outputs.items():
        tr.out.outputs[serving] = tr.node(graph.get_tensor_by_name(tensor))
    if tr.unsupported:
        raise UnsupportedGraph(tr.unsupported, meta)
    taken = set(tr.inputs.values())
    for node in tr.out.nodes:  # a node may not share a name with a spec input
        if node["name"] in taken:
            raise ValueError(f"{meta}: node {node['name']!r} clashes with an input name")
    tr.out.fallbacks = dict(tr.fallbacks)
    emitted = {node["name"] for node in tr.out.nodes}
    for tensor, node in tr.names.items():  # the first tensor seen for a node is the one it was emitted for
        if node in emitted:
            tr.out.tensors.setdefault(node, tensor)
    return tr.out


def unsupported_ops(graph: tf.Graph, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, str]:
    """Op types `auto` cannot translate, not even as a raw TF op (type -> one node name); empty when the graph
    converts."""
    try:
        translate(graph, inputs, outputs, "")
    except UnsupportedGraph as exc:
        return exc.found
    return {}
