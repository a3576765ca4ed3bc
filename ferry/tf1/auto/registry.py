"""What `auto`'s op handlers are made of: the `@handles` registry, fusion rules, and the two things a
handler uses besides the `Translator`: `layer_name` and `Unsupported`.

A handler translates one TF1 op into graph-form nodes and returns the name of the node computing the
op's output:

    @handles("MaxPool", "AvgPool")
    def pool(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str: ...

It emits its inputs with `tr.node(tensor)` and appends its node with `tr.add(...)`; it raises
`Unsupported` for a form of the op it cannot translate. By default an op with an input that reads a
variable is refused before its handler runs; a handler that reads the variables itself (a layer
binding its weights, or an elementwise op turning one into a `ferry.Weight`) says
`reads_variables=True`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

    from ferry.tf1.auto.core import Translator

    HandlerFn = Callable[[Translator, tf.Operation, tf.Tensor], str]


class Unsupported(Exception):
    """An op (or a form of it) `auto` cannot translate: the op type as listed to the user, and one node."""

    def __init__(self, op_type: str, node: str):
        super().__init__(f"{op_type} ({node})")
        self.op_type, self.node = op_type, node


def layer_name(scope: str) -> str:
    """Keras names cannot hold '/': `block1/conv1` -> `block1.conv1`."""
    return scope.replace("/", ".")


@dataclass(frozen=True)
class Handler:
    """The translation of some op types; `reads_variables`: it is given ops whose inputs read variables."""

    fn: HandlerFn
    reads_variables: bool


HANDLERS: dict[str, Handler] = {}  # op type -> its handler, filled by @handles as the family modules load


def handles(*op_types: str, reads_variables: bool = False) -> Callable[[HandlerFn], HandlerFn]:
    """Register the decorated function as the translation of `op_types` (one handler per op type)."""

    def register(fn: HandlerFn) -> HandlerFn:
        for op_type in op_types:
            if op_type in HANDLERS:
                raise ValueError(f"auto: {op_type} is handled by {HANDLERS[op_type].fn.__qualname__} already")
            HANDLERS[op_type] = Handler(fn, reads_variables)
        return fn

    return register


@dataclass(frozen=True)
class Fusion:
    """A pattern rooted at an op of type `root` that reads ops of types `over` and becomes one layer:
    `match(tr, root_op)` returns what `emit(tr, root_op, matched)` needs, or None when it does not apply."""

    name: str
    root: str
    over: frozenset[str]
    match: Callable[[Translator, tf.Operation], Any]
    emit: Callable[[Translator, tf.Operation, Any], str]
