"""`architecture: auto`: rebuild a Keras model from the TF1 graph itself.

The inference subgraph between the spec's inputs and outputs is walked from the outputs back.
Control flow with a constant predicate (`is_training` switches, `PlaceholderWithDefault`) is
folded away; `Identity`/`read` ops are looked through. Op patterns become idiomatic layers named
after their TF1 scope (`/` becomes `.`, which Keras names allow); the remaining supported ops are
translated one by one into `keras.ops` calls. The result is a spec `graph` architecture plus exact
name-map rules binding every variable the graph reads, so coverage is complete by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from ferry.tf1.facts import lstm_forget_bias

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
PASS_THROUGH = {"Identity", "StopGradient", "Snapshot", "PreventGradient"}
MAX_CONST = 4096  # elements: larger constants cannot live in a spec

# TF op -> keras.ops function, for ops translated one by one (elementwise and shape ops).
UNARY = {"Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid", "Tanh": "tanh",
         "Softplus": "softplus", "Exp": "exp", "Log": "log", "Neg": "negative", "Sqrt": "sqrt", "Rsqrt": "rsqrt",
         "Square": "square", "Abs": "abs", "Erf": "erf", "Reciprocal": "reciprocal", "Floor": "floor"}
BINARY = {"Add": "add", "AddV2": "add", "Sub": "subtract", "Mul": "multiply", "RealDiv": "divide",
          "Maximum": "maximum", "Minimum": "minimum", "Pow": "power", "SquaredDifference": None,
          "BatchMatMulV2": "matmul", "BatchMatMul": "matmul"}
REDUCE = {"Mean": "mean", "Sum": "sum", "Max": "max", "Min": "min", "Prod": "prod"}
LAYER_OPS = {"Conv2D", "DepthwiseConv2dNative", "MatMul", "BiasAdd", "FusedBatchNorm", "FusedBatchNormV2",
             "FusedBatchNormV3", "MaxPool", "AvgPool", "GatherV2", "ResourceGather", "Gather", "Pad",
             "ConcatV2", "Reshape", "Squeeze", "ExpandDims", "Transpose", "Cast", "Softmax", "LeakyRelu",
             "StridedSlice", "TensorArrayGatherV3"}
SUPPORTED = sorted(LAYER_OPS | set(UNARY) | set(BINARY) | set(REDUCE) | PASS_THROUGH
                   | {"Placeholder", "PlaceholderWithDefault", "Const", "Switch", "Merge"} | VARIABLE_OPS
                   | {"ReadVariableOp"})


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

    def architecture(self) -> dict[str, Any]:
        return {"graph": {"nodes": self.nodes, "outputs": self.outputs}}


def layer_name(scope: str) -> str:
    """Keras names cannot hold '/': `block1/conv1` -> `block1.conv1`."""
    return scope.replace("/", ".")


class Translator:
    """Walks the inference graph from the outputs and emits graph-form nodes."""

    def __init__(self, graph: tf.Graph, inputs: dict[str, str], meta: str):
        self.graph, self.meta = graph, meta
        self.inputs = {graph.get_tensor_by_name(t).op.name: name for name, t in inputs.items()}
        self.out = Translation()
        self.names: dict[str, str] = {}  # tensor name -> node name
        self.unsupported: dict[str, str] = {}
        self._alive: dict[str, bool] = {}

    # -- looking through the graph ---------------------------------------------------------------

    def static(self, tensor: tf.Tensor) -> np.ndarray | None:
        """The tensor's value if it is a constant (through identities and placeholder defaults)."""
        tensor = self.resolve(tensor)
        if tensor.op.type == "PlaceholderWithDefault" and tensor.op.name not in self.inputs:
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
        if op.type in PASS_THROUGH:
            return self.resolve(op.inputs[0])
        if op.type == "Switch":
            pred = self.static(op.inputs[1])
            if pred is None:
                raise _Unsupported("Switch(non-constant predicate)", op.name)
            if tensor.value_index != int(bool(pred)):
                raise Dead(op.name)
            return self.resolve(op.inputs[0])
        if op.type == "Merge":
            alive = [r for r in (self._live(t) for t in op.inputs) if r is not None]
            if len(alive) != 1:
                raise _Unsupported(f"Merge({len(alive)} live inputs)", op.name)
            return alive[0]
        return tensor

    def _live(self, tensor: tf.Tensor) -> tf.Tensor | None:
        """`tensor` resolved, or None when it depends on an untaken branch."""
        try:
            resolved = self.resolve(tensor)
        except Dead:
            return None
        if resolved.op.type in ("Merge", "Switch") or resolved.op.name in self.inputs:
            return resolved
        if resolved.op.name not in self._alive:
            self._alive[resolved.op.name] = all(self._live(t) is not None for t in resolved.op.inputs)
        return resolved if self._alive[resolved.op.name] else None

    def variable(self, tensor: tf.Tensor) -> str | None:
        """The variable a tensor reads, if any."""
        op = self.resolve(tensor).op
        if op.type in VARIABLE_OPS:
            return op.name
        if op.type == "ReadVariableOp" and op.inputs[0].op.type == "VarHandleOp":
            return op.inputs[0].op.name
        return None

    def const(self, tensor: tf.Tensor, what: str) -> Any:
        value = self.static(tensor)
        if value is None:
            raise _Unsupported(f"non-constant {what}", tensor.op.name)
        if np.size(value) > MAX_CONST:
            raise _Unsupported(f"constant of {np.size(value)} elements (max {MAX_CONST})", tensor.op.name)
        return value.tolist() if isinstance(value, np.ndarray) else value

    # -- emitting ----------------------------------------------------------------------------------

    def node(self, tensor: tf.Tensor) -> str:
        """The graph node computing `tensor` (emitting it and its inputs first)."""
        try:
            tensor = self.resolve(tensor)
        except _Unsupported as exc:
            self.unsupported.setdefault(exc.op_type, exc.node)
            return layer_name(tensor.op.name)
        if tensor.name in self.names:
            return self.names[tensor.name]
        op = tensor.op
        if op.name in self.inputs:
            name = self.inputs[op.name]
        else:
            try:
                name = self._emit_named(op, tensor)
            except _Unsupported as exc:
                self.unsupported.setdefault(exc.op_type, exc.node)
                name = layer_name(op.name)
                self.names[tensor.name] = name
                for upstream in op.inputs:  # keep walking, so every unsupported op type is listed at once
                    if self.variable(upstream) is None and self.static(upstream) is None:
                        self.node(upstream)
        self.names[tensor.name] = name
        return name

    def _emit_named(self, op: tf.Operation, tensor: tf.Tensor) -> str:
        """`emit`, with any error a handler did not foresee reported against this node, never raw."""
        try:
            return self.emit(op, tensor)
        except (Dead, _Unsupported):
            raise
        except Exception as exc:
            message = (str(exc).splitlines() or [""])[0][:200]
            raise _Unsupported(f"{op.type} ({type(exc).__name__}: {message})", op.name) from exc

    def add(self, name: str, inputs: list[str], **spec: Any) -> str:
        """Append a node: name, `class` or `op`, inputs, then the arguments (defaults left out)."""
        kind = {k: spec.pop(k) for k in ("class", "op") if k in spec}
        if kind.get("class") in ("Conv2D", "DepthwiseConv2D"):  # Keras' defaults; pooling's differ
            for key in ("strides", "dilation_rate"):
                if spec.get(key) == [1, 1]:
                    del spec[key]
        self.out.nodes.append({"name": name, **kind, "inputs": inputs, **spec})
        return name

    def unique(self, name: str, var: str) -> str:
        """`name`, or the variable's full path when the scope already named a layer (separable convs)."""
        return layer_name(var) if any(n["name"] == name for n in self.out.nodes) else name

    def bind(self, var: str, weight: str, transform: Any = None) -> None:
        rule = {"from": var, "to": weight, "match": "exact"}
        if transform:
            rule["transform"] = transform
        self.out.rules.append(rule)

    def emit(self, op: tf.Operation, tensor: tf.Tensor) -> str:
        t = op.type
        if t == "BiasAdd" and self.resolve(op.inputs[0]).op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            return self.linear(self.resolve(op.inputs[0]).op, bias=op)
        if t == "BiasAdd" and (dot := self.tensordot(op.inputs[0])):
            return self.linear(dot[0], bias=op, x=dot[1])
        if t == "Transpose" and self.resolve(op.inputs[0]).op.type == "TensorArrayGatherV3":
            return self.rnn(op)
        if t in ("Conv2D", "DepthwiseConv2dNative", "MatMul") and self.variable(op.inputs[1]):
            return self.linear(op, bias=None)
        if t.startswith("FusedBatchNorm"):
            return self.batch_norm(op)
        if t in ("GatherV2", "ResourceGather", "Gather") and self.variable(op.inputs[0]):
            return self.embedding(op)
        if t in ("MaxPool", "AvgPool"):
            return self.pool(op)
        name = layer_name(op.name)
        if t in BINARY and any(self.variable(i) for i in op.inputs):
            return self.add(name, [self.operand(i, op) for i in op.inputs[:2]], op=BINARY[t] or "subtract")
        if any(self.variable(i) for i in op.inputs):
            raise _Unsupported(t, op.name)
        if t in UNARY:
            return self.add(name, [self.node(op.inputs[0])], op=UNARY[t])
        if t == "LeakyRelu":
            return self.add(name, [self.node(op.inputs[0])], op="leaky_relu", negative_slope=op.get_attr("alpha"))
        if t == "Softmax":
            return self.add(name, [self.node(op.inputs[0])], op="softmax", axis=-1)
        if t in BINARY:
            return self.binary(op, name)
        if t in REDUCE:
            axis = self.const(op.inputs[1], "axis")
            return self.add(name, [self.node(op.inputs[0])], op=REDUCE[t], axis=axis,
                            keepdims=bool(op.get_attr("keep_dims")))
        if t == "Cast":
            return self.add(name, [self.node(op.inputs[0])], op="cast", dtype=op.get_attr("DstT").name)
        if t == "ConcatV2":
            axis = int(self.const(op.inputs[-1], "axis"))
            return self.add(name, [self.node(i) for i in op.inputs[:-1]], **{"class": "Concatenate"}, axis=axis)
        if t in ("Reshape", "Squeeze", "ExpandDims"):
            return self.reshape(op, name, tensor)
        if t == "Transpose":
            return self.add(name, [self.node(op.inputs[0])], op="transpose", axes=self.const(op.inputs[1], "perm"))
        if t == "Pad":
            return self.pad(op, name)
        if t == "StridedSlice":
            return self.strided_slice(op, name)
        raise _Unsupported(t, op.name)

    def operand(self, tensor: tf.Tensor, op: tf.Operation) -> str:
        """An operand of an elementwise op: a node, or a `ferry.Weight` holding the variable it reads."""
        var = self.variable(tensor)
        if not var:
            return self.node(tensor)
        if op.type == "SquaredDifference":
            raise _Unsupported("SquaredDifference(variable)", op.name)
        name = layer_name(var)
        if name not in {n["name"] for n in self.out.nodes}:
            other = next(self.node(i) for i in op.inputs[:2] if not self.variable(i))
            self.bind(var, f"{name}/value")
            self.add(name, [other], **{"class": "ferry.Weight"}, shape=tensor.shape.as_list())
        return name

    def tensordot(self, tensor: tf.Tensor) -> tuple[tf.Operation, tf.Tensor] | None:
        """`Reshape(MatMul(Reshape(x, [-1, d]), W))`, as `tf.layers.dense` on a rank>2 `x` writes it:
        (the MatMul, x), so it becomes one Dense applied to x."""
        reshaped = self.resolve(tensor).op
        if reshaped.type != "Reshape":
            return None
        matmul = self.resolve(reshaped.inputs[0]).op
        if matmul.type != "MatMul" or not self.variable(matmul.inputs[1]):
            return None
        flat = self.resolve(matmul.inputs[0]).op
        if flat.type != "Reshape" or (flat.inputs[0].shape.rank or 0) < 3:
            return None
        return matmul, flat.inputs[0]

    def strided_slice(self, op: tf.Operation, name: str) -> str:
        """Unit-stride slices (masks for begin/end/shrink) -> `keras.ops.slice` (+ `squeeze`)."""
        if op.get_attr("ellipsis_mask") or op.get_attr("new_axis_mask"):
            raise _Unsupported("StridedSlice(ellipsis/new axis)", op.name)
        begin, end, strides = (self.const(op.inputs[i], "bounds") for i in (1, 2, 3))
        shape = op.inputs[0].shape.as_list()
        if any(s != 1 for s in strides) or len(begin) != len(shape):
            raise _Unsupported("StridedSlice(strides)", op.name)
        bmask, emask, shrink = (op.get_attr(a) for a in ("begin_mask", "end_mask", "shrink_axis_mask"))
        start, size, squeeze = [], [], []
        for axis, (b, e) in enumerate(zip(begin, end)):
            dim = shape[axis]
            if shrink >> axis & 1:
                b = b + dim if b < 0 and dim is not None else b
                start.append(b), size.append(1), squeeze.append(axis)
                continue
            b = 0 if bmask >> axis & 1 else b
            if emask >> axis & 1:
                start.append(b), size.append(-1)
                continue
            if dim is None or b < 0 or e < 0:
                raise _Unsupported("StridedSlice(dynamic bounds)", op.name)
            start.append(b), size.append(e - b)
        sliced = self.add(f"{name}.slice", [self.node(op.inputs[0])], op="slice", start_indices=start, shape=size)
        return self.add(name, [sliced], op="squeeze", axis=squeeze) if squeeze else sliced

    def rnn(self, op: tf.Operation) -> str:
        """`dynamic_rnn` with one TF1 LSTMCell/BasicLSTMCell/GRUCell -> Keras LSTM/GRU (all steps)."""
        scope = op.name.rsplit("/", 1)[0]
        x = self.graph.get_operation_by_name(f"{scope}/transpose").inputs[0]
        variables = sorted(v.name for v in self.graph.get_operations()
                           if v.type in VARIABLE_OPS and v.name.startswith(scope + "/"))
        kernels = [v for v in variables
                   if v.endswith("/kernel") and not v.endswith(("gates/kernel", "candidate/kernel"))]
        gates = [v for v in variables if v.endswith("/gates/kernel")]
        if len(kernels) + len(gates) != 1:
            raise _Unsupported("dynamic_rnn(cell)", op.name)
        if gates:
            cell = gates[0].removesuffix("/gates/kernel")
            parts = ["gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"]
            units = self.graph.get_operation_by_name(f"{cell}/candidate/bias").outputs[0].shape.as_list()[0]
            config, keras_cell, transform = {"class": "GRU", "reset_after": False}, "gru_cell", "gru"
        else:
            cell = kernels[0].removesuffix("/kernel")
            parts = ["kernel", "bias"]
            units = self.graph.get_operation_by_name(f"{cell}/bias").outputs[0].shape.as_list()[0] // 4
            forget_bias = lstm_forget_bias(self.graph, cell)
            config, keras_cell = {"class": "LSTM"}, "lstm_cell"
            transform = {"lstm": {"forget_bias": forget_bias}}
        extra = [v for v in variables if v.startswith(cell + "/") and v.removeprefix(cell + "/") not in parts
                 and not _optimizer_slot(v)]
        if extra:
            raise _Unsupported("dynamic_rnn(cell with " + ", ".join(extra) + ")", op.name)
        name = layer_name(cell)
        self.out.rules.append({"from": cell, "to": f"{name}/{keras_cell}", "match": "exact", "transform": transform})
        return self.add(name, [self.node(x)], **config, units=units, return_sequences=True)

    def linear(self, op: tf.Operation, bias: tf.Operation | None, x: tf.Tensor | None = None) -> str:
        """Conv2D / DepthwiseConv2dNative / MatMul (+ BiasAdd) with variable weights -> one layer
        (applied to `x` instead of the op's own input for a tensordot)."""
        kernel_var = self.variable(op.inputs[1])
        bias_var = self.variable(bias.inputs[1]) if bias is not None else None
        if bias is not None and not bias_var:
            raise _Unsupported("BiasAdd", bias.name)
        x = self.node(op.inputs[0] if x is None else x)  # first: the name must be unique among nodes so far
        name = self.unique(layer_name(kernel_var.rsplit("/", 1)[0]), kernel_var)
        shape = op.inputs[1].shape.as_list()
        if op.type == "MatMul":
            if op.get_attr("transpose_a"):
                raise _Unsupported("MatMul(transpose_a)", op.name)
            units = shape[0] if op.get_attr("transpose_b") else shape[1]
            transposed = {"transpose": {"perm": [1, 0]}} if op.get_attr("transpose_b") else None
            self.bind(kernel_var, f"{name}/kernel", transposed)
            config = {"class": "Dense", "units": units}
        else:
            if op.get_attr("data_format").decode() != "NHWC":
                raise _Unsupported(f"{op.type}(NCHW)", op.name)
            padding = op.get_attr("padding").decode()
            if padding not in ("SAME", "VALID"):
                raise _Unsupported(f"{op.type}(padding={padding})", op.name)
            strides, dilations = op.get_attr("strides"), op.get_attr("dilations")
            config = {"kernel_size": shape[:2], "strides": strides[1:3], "padding": padding.lower(),
                      "dilation_rate": dilations[1:3]}
            if op.type == "Conv2D":
                config = {"class": "Conv2D", "filters": shape[3], **config}
                self.bind(kernel_var, f"{name}/kernel")
            else:
                config = {"class": "DepthwiseConv2D", "depth_multiplier": shape[3], **config}
                self.bind(kernel_var, f"{name}/kernel")  # Keras 3 names the depthwise kernel `kernel`
        if bias_var:
            self.bind(bias_var, f"{name}/bias")
        return self.add(name, [x], **config, use_bias=bool(bias_var))

    def batch_norm(self, op: tf.Operation) -> str:
        """FusedBatchNorm* at inference -> BatchNormalization (epsilon from the op; no gamma/beta allowed)."""
        if op.get_attr("is_training"):
            raise _Unsupported(f"{op.type}(is_training=True)", op.name)
        x, scale, offset, mean, variance = op.inputs[:5]
        mean_var, var_var = self.variable(mean), self.variable(variance)
        if not (mean_var and var_var):
            raise _Unsupported(f"{op.type}(constant statistics)", op.name)
        name = layer_name(mean_var.rsplit("/", 1)[0])
        gamma, beta = self.variable(scale), self.variable(offset)
        for var, weight in ((gamma, "gamma"), (beta, "beta"), (mean_var, "moving_mean"), (var_var, "moving_variance")):
            if var:
                self.bind(var, f"{name}/{weight}")
        for const, ones in ((scale, 1.0), (offset, 0.0)):
            if self.variable(const) is None and not np.allclose(self.const(const, "constant"), ones):
                raise _Unsupported(f"{op.type}(constant scale/offset)", op.name)
        return self.add(name, [self.node(x)], **{"class": "BatchNormalization"},
                        epsilon=float(str(np.float32(op.get_attr("epsilon")))), scale=bool(gamma), center=bool(beta))

    def embedding(self, op: tf.Operation) -> str:
        var = self.variable(op.inputs[0])
        if op.type == "GatherV2" and int(self.const(op.inputs[2], "axis")) != 0:
            raise _Unsupported("GatherV2(axis!=0)", op.name)
        rows, width = op.inputs[0].shape.as_list()
        name = layer_name(var)
        self.bind(var, f"{name}/embeddings")
        return self.add(name, [self.node(op.inputs[1])], **{"class": "Embedding"}, input_dim=rows, output_dim=width)

    def pool(self, op: tf.Operation) -> str:
        if op.get_attr("data_format").decode() != "NHWC":
            raise _Unsupported(f"{op.type}(NCHW)", op.name)
        cls = "MaxPooling2D" if op.type == "MaxPool" else "AveragePooling2D"
        return self.add(layer_name(op.name), [self.node(op.inputs[0])], **{"class": cls},
                        pool_size=op.get_attr("ksize")[1:3], strides=op.get_attr("strides")[1:3],
                        padding=op.get_attr("padding").decode().lower())

    def binary(self, op: tf.Operation, name: str) -> str:
        a, b = op.inputs[0], op.inputs[1]
        ca, cb = self.static(a), self.static(b)
        if op.type == "SquaredDifference":
            diff = self.add(f"{name}.diff", [self.node(a), self.node(b)], op="subtract")
            return self.add(name, [diff], op="square")
        fn = BINARY[op.type]
        if op.type.startswith("BatchMatMul"):
            nodes = [self.node(a), self.node(b)]
            for i, attr in enumerate(("adj_x", "adj_y")):
                if op.get_attr(attr):
                    nodes[i] = self.add(f"{name}.{attr}", [nodes[i]], op="swapaxes", axis1=-1, axis2=-2)
            return self.add(name, nodes, op=fn)
        if ca is None and cb is None:
            return self.add(name, [self.node(a), self.node(b)], op=fn)
        if cb is not None and ca is None:
            return self.add(name, [self.node(a)], op=fn, args=[self.const(b, "operand")])
        if ca is not None and cb is None and fn in ("add", "multiply", "maximum", "minimum"):
            return self.add(name, [self.node(b)], op=fn, args=[self.const(a, "operand")])
        if ca is not None and cb is None and fn == "subtract":  # c - x = (-x) + c
            neg = self.add(f"{name}.neg", [self.node(b)], op="negative")
            return self.add(name, [neg], op="add", args=[self.const(a, "operand")])
        raise _Unsupported(f"{op.type}(constant first operand)", op.name)

    def reshape(self, op: tf.Operation, name: str, tensor: tf.Tensor) -> str:
        x = self.node(op.inputs[0])
        if op.type == "Squeeze":
            axis = op.get_attr("squeeze_dims")
            return self.add(name, [x], op="squeeze", axis=list(axis) or None)
        if op.type == "ExpandDims":
            return self.add(name, [x], op="expand_dims", axis=int(self.const(op.inputs[1], "axis")))
        static = tensor.shape.as_list() if tensor.shape.rank is not None else None
        if static and all(d is not None for d in static[1:]):
            return self.add(name, [x], op="reshape", newshape=[-1, *static[1:]])
        shape = self.const(op.inputs[1], "shape")
        return self.add(name, [x], op="reshape", newshape=shape)

    def pad(self, op: tf.Operation, name: str) -> str:
        paddings = self.const(op.inputs[1], "paddings")
        if len(paddings) == 4 and paddings[0] == [0, 0] and paddings[3] == [0, 0]:
            return self.add(name, [self.node(op.inputs[0])], **{"class": "ZeroPadding2D"},
                            padding=[paddings[1], paddings[2]])
        return self.add(name, [self.node(op.inputs[0])], op="pad", pad_width=paddings)


def _optimizer_slot(name: str) -> bool:
    return any(part in ("Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1") for part in name.split("/"))


class _Unsupported(Exception):
    def __init__(self, op_type: str, node: str):
        self.op_type, self.node = op_type, node


def translate(graph: tf.Graph, inputs: dict[str, str], outputs: dict[str, str], meta: str) -> Translation:
    """Translate the inference graph between `inputs` and `outputs` (serving name -> tensor name)."""
    tr = Translator(graph, inputs, meta)
    for serving, tensor in outputs.items():
        tr.out.outputs[serving] = tr.node(graph.get_tensor_by_name(tensor))
    if tr.unsupported:
        raise UnsupportedGraph(tr.unsupported, meta)
    taken = set(tr.inputs.values())
    for node in tr.out.nodes:  # a node may not share a name with a spec input
        if node["name"] in taken:
            raise ValueError(f"{meta}: node {node['name']!r} clashes with an input name")
    return tr.out


def unsupported_ops(graph: tf.Graph, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, str]:
    """Op types `auto` cannot translate (type -> one node name); empty when the graph converts."""
    try:
        translate(graph, inputs, outputs, "")
    except UnsupportedGraph as exc:
        return exc.found
    return {}
