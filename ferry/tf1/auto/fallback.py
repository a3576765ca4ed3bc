"""The fallback: an op with no translation becomes a `ferry.RawOp` node calling `tf.raw_ops.<op>` itself.

The call is derived from the op's definition (`op_def_registry`) and the signature of its `tf.raw_ops`
function: the attributes passed are the function's parameters that are not inputs (a type inferred from an
input, `T`, is no parameter: it is dropped); inputs that are variables become weights of the layer bound
through the name map, constants stay in its config. Refused, naming the node: stateful ops (random ops,
queues and readers, `py_func`), control flow that no rule folded (a loop that is not an RNN), ops on
resource or variant tensors or calling functions, and ops `tf.raw_ops` does not have.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from ferry.tf1.auto.registry import Unsupported, layer_name
from ferry.tf1.auto.values import has_node, model_input, output_name, part

if TYPE_CHECKING:
    from tensorflow.core.framework.op_def_pb2 import OpDef

    from ferry.tf1.auto.core import Translator

CONTROL_FLOW = frozenset({"Enter", "Exit", "NextIteration", "LoopCond", "Switch", "Merge", "RefEnter", "RefExit",
                          "RefNextIteration", "RefSwitch", "RefMerge", "ControlTrigger", "Abort"})
PY_FUNCS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
NOT_A_TENSOR = (tf.resource.as_datatype_enum, tf.variant.as_datatype_enum)


def refusal(op: tf.Operation, op_def: OpDef | None) -> str | None:
    """Why `op` cannot run as a raw op in a Keras layer (the reason, as listed to the user), or None."""
    if op_def is None or not hasattr(tf.raw_ops, op.type):
        return "not in tf.raw_ops"
    if op.type in PY_FUNCS:
        return "py_func: Python code the graph does not hold"
    if op.type in CONTROL_FLOW:
        return "control flow that is not an RNN loop, with a non-constant predicate"
    if op_def.is_stateful:
        if "Random" in op.type or op.type in ("Multinomial", "TruncatedNormal", "ParameterizedTruncatedNormal"):
            return "a random op at inference"
        if "Queue" in op.type or "Reader" in op.type or "Iterator" in op.type:
            return "a queue, reader or iterator: feed its output as a spec input instead"
        return "stateful op"
    if any(a.type in ("func", "list(func)") for a in op_def.attr):
        return "calls a function"
    args = [*op_def.input_arg, *op_def.output_arg]
    if any(a.is_ref or a.type in NOT_A_TENSOR for a in args) or any(
            t.dtype.base_dtype in (tf.resource, tf.variant) for t in [*op.inputs, *op.outputs]):
        return "resource or variant tensors"
    return None


def attribute(op: tf.Operation, name: str, kind: str) -> Any:
    """The value of attribute `name` (of op-def type `kind`) as the config holds it (JSON: types by name)."""
    value = op.get_attr(name)
    if kind in ("type", "list(type)"):
        return [tf.as_dtype(v).name for v in value] if kind.startswith("list") else tf.as_dtype(value).name
    if kind in ("shape", "list(shape)"):
        shapes = [tf.TensorShape(v) for v in (value if kind.startswith("list") else [value])]
        listed = [s.as_list() if s.rank is not None else None for s in shapes]
        return listed if kind.startswith("list") else listed[0]
    if kind in ("string", "list(string)"):
        return [v.decode() for v in value] if kind.startswith("list") else value.decode()
    if kind in ("int", "float", "bool", "list(int)", "list(float)", "list(bool)"):
        return list(value) if kind.startswith("list") else value
    raise Unsupported(f"{op.type}(attribute {name} of type {kind})", op.name)


def raw_attrs(op: tf.Operation, op_def: OpDef) -> dict[str, Any]:
    """The attributes `tf.raw_ops.<op>` takes as parameters, read from the NodeDef (inferred ones dropped)."""
    inputs = {a.name for a in op_def.input_arg}
    kinds = {a.name: a.type for a in op_def.attr}
    params = inspect.signature(getattr(tf.raw_ops, op.type)).parameters
    return {name: attribute(op, name, kinds[name]) for name in params
            if name not in inputs and name != "name" and name in kinds and name in op.node_def.attr}


def arg_sizes(op: tf.Operation, op_def: OpDef) -> list[tuple[str, int]]:
    """Each input argument of the op def with how many of the op's inputs it takes."""
    sizes = []
    for arg in op_def.input_arg:
        if arg.number_attr:
            sizes.append((arg.name, op.get_attr(arg.number_attr)))
        elif arg.type_list_attr:
            sizes.append((arg.name, len(op.get_attr(arg.type_list_attr))))
        else:
            sizes.append((arg.name, 1))
    return sizes


def fallback(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Emit `op` as a `ferry.RawOp` node (one per op; a `ferry.Pick` per output read when it has several);
    Unsupported, naming the node, when it cannot run that way."""
    op_def = op_def_registry.get(op.type)
    reason = refusal(op, op_def)
    if reason:
        raise Unsupported(f"{op.type}({reason})", op.name)
    name = layer_name(op.name)
    raw = name if len(op.outputs) == 1 else part(tr, name, "outputs")
    if not has_node(tr, raw):
        _emit_raw(tr, op, op_def, raw)
    tr.fallbacks.setdefault(op.type, op.name)
    if len(op.outputs) == 1:
        return raw
    return tr.add(output_name(tr, op, tensor), [raw], **{"class": "ferry.Pick"}, index=tensor.value_index)


def _emit_raw(tr: Translator, op: tf.Operation, op_def: OpDef, raw: str) -> None:
    attrs = raw_attrs(op, op_def)
    entries: list[dict[str, Any]] = []
    tensors: list[str] = []
    flat = iter(op.inputs)
    for arg, size in arg_sizes(op, op_def):
        for k in range(size):
            source = next(flat)
            entry: dict[str, Any] = {"arg": arg}
            dtype = source.dtype.base_dtype.name
            if (var := tr.variable(source)) is not None:
                weight = arg if size == 1 else f"{arg}_{k}"
                if source.shape.rank is None or None in source.shape.as_list():
                    raise Unsupported(f"{op.type}(a variable of unknown shape)", source.op.name)
                entry.update(weight=weight, shape=source.shape.as_list(), dtype=dtype)
                tr.bind(var, f"{raw}/{weight}")
            elif (value := tr.static(source)) is not None:
                value = tr.const(source, f"input {arg}")
                if isinstance(value, bytes) or (isinstance(value, list) and np.asarray(value).dtype.kind == "O"):
                    raise Unsupported(f"{op.type}(a string constant input)", source.op.name)
                entry.update(constant=value, dtype=dtype)
            else:
                tensors.append(tr.node(source))
            entries.append(entry)
    anchored = not tensors
    if anchored:
        tensors = [tr.node(model_input(tr))]
    tr.add(raw, tensors, **{"class": "ferry.RawOp"}, op_type=op.type, operands=entries, attrs=attrs,
           outputs=len(op.outputs), anchored=anchored)
