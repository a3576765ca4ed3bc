"""TF1 graphs of tests/test_auto_fallback.py: ops `auto` has no translation for, and graphs it must refuse.

    python tests/tf1_builders/auto_fallback.py OUT

writes `OUT/fallback/` (`model.ckpt.*`, `shards/`, `manifest.json`): dense layers around ops with no handler,
run as `ferry.RawOp` — `Atan2` reading a variable, `Cumprod` (exclusive, reverse), `Lgamma`, `Roll` (constant
shift and axis), `Betainc` (a constant, a variable and a tensor), `BroadcastTo` of a variable (no tensor input),
`Qr` (two outputs, both read), a `Cast` to float64 and `Atan2` on float64; `OUT/refused/`: forms of ops whose
handler refuses them, run as `ferry.RawOp` too (`refused_forms`); and `OUT/odd/<case>/`
(`model.meta`, `manifest.json`) for graphs `auto` refuses, each naming a node: a reshape to a shape fed at run
time into a placeholder of unknown rank, a `cond` on a fed predicate, a queue's dequeue, a `py_func`, a
`RandomUniform` in the inference path, a `tf.while_loop` that is no RNN.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from common import save_model, tf, v1  # first: TF1 behaviour before TensorFlow is used


def fallback(out: Path, rng: np.random.RandomState) -> None:
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(3)
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        h = v1.layers.dense(x, 6, activation=tf.nn.tanh, name="fc1")
        scale = v1.get_variable("scale", [6], initializer=v1.random_uniform_initializer(0.5, 1.5))
        h = tf.math.atan2(h, scale, name="angle")  # a variable input: a weight of the RawOp layer
        h = tf.math.cumprod(h + 1.0, axis=1, exclusive=True, reverse=True, name="cumprod")
        h = h + tf.math.lgamma(x + 1.5, name="lgamma")
        h = tf.roll(h, shift=2, axis=1, name="roll")
        b = v1.get_variable("b", [], initializer=v1.random_uniform_initializer(0.5, 2.0))
        h = h + tf.math.betainc(tf.constant(1.5), b, tf.sigmoid(x), name="betainc")
        table = v1.get_variable("table", [1, 6], initializer=v1.random_uniform_initializer(-1, 1))
        h = h + tf.reduce_sum(tf.broadcast_to(table, [3, 6], name="broadcast"), axis=0)
        q, r = tf.linalg.qr(tf.reshape(h, [-1, 3, 2]), name="qr")
        h = tf.reshape(tf.abs(q) + tf.abs(r)[:, :1, :], [-1, 6])
        wide = tf.math.atan2(tf.cast(h, tf.float64), tf.constant(2.0, tf.float64), name="angle64")
        h = h + tf.cast(wide, tf.float32)
        y = tf.identity(v1.layers.dense(h, 3, name="fc2"), name="y")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            shards = [{"x": rng.rand(8, 6).astype(np.float32)} for _ in range(2)]
            save_model(out / "fallback", sess, {"x": x}, {"y": y}, shards)


def refused_forms(out: Path, rng: np.random.RandomState) -> None:
    """Ops whose handler refuses the form written here, each run as `ferry.RawOp` instead: a gather from a
    variable along axis 1 (`GatherV2(axis!=0)`), a MatMul of two tensors (`MatMul`: no variable kernel), an
    exclusive cumsum along the batch dim (`Cumsum(exclusive, along a run-time dim)`), an unsorted top-k
    (`TopKV2(sorted=False)`), a reshape to a shape computed at run time (`Mul(run-time shape)`: `Shape` runs raw
    too) and a concat on a non-constant axis."""
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(5)
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        h = v1.layers.dense(x, 6, activation=tf.nn.tanh, name="fc1")
        table = v1.get_variable("table", [6, 6], initializer=v1.random_uniform_initializer(-1, 1))
        h = tf.matmul(h, tf.gather(table, [3, 1, 0, 2, 5, 4], axis=1, name="columns"))
        h = h + tf.math.cumsum(h, axis=0, exclusive=True, name="running")
        top = tf.math.top_k(h, k=3, sorted=False, name="top").values
        h = h + tf.reduce_sum(top, axis=1, keepdims=True)  # order-free: the sum of the 3 largest
        pairs = tf.reshape(h, tf.stack([tf.shape(h)[0] * 2, -1]), name="pairs")  # a shape computed at run time
        one = tf.cast(x[0, 0] * 0.0 + 1.0, tf.int32)  # 1, but not a constant
        wide = tf.reshape(tf.concat([pairs, pairs], axis=one, name="wide"), [-1, 12])
        h = h + tf.reduce_sum(tf.reshape(wide, [-1, 2, 6]), axis=1)
        y = tf.identity(v1.layers.dense(h, 3, name="fc2"), name="y")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            shards = [{"x": rng.rand(8, 6).astype(np.float32)} for _ in range(2)]
            save_model(out / "refused", sess, {"x": x}, {"y": y}, shards)


def odd_graphs() -> dict[str, tuple[tf.Graph, dict[str, str], dict[str, str]]]:
    """Graphs `auto` refuses: case -> (graph, inputs, outputs)."""
    cases = {}

    def case(name: str):
        def register(build):
            g = tf.Graph()
            with g.as_default():
                inputs, outputs = build()
            cases[name] = (g, {k: t.name for k, t in inputs.items()}, {k: t.name for k, t in outputs.items()})
            return build
        return register

    @case("reshape_unknown_rank")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        shape = v1.placeholder(tf.int32, None, name="shape")  # unknown rank, fed at run time
        return {"x": x, "shape": shape}, {"y": tf.identity(tf.reshape(x, shape), name="y")}

    @case("cond_on_fed_predicate")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        flag = v1.placeholder(tf.bool, [], name="flag")
        return {"x": x, "flag": flag}, {"y": tf.identity(tf.cond(flag, lambda: x * 2.0, lambda: x - 1.0), name="y")}

    @case("queue_input")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        queue = v1.FIFOQueue(4, [tf.float32], shapes=[[6]], name="queue")
        return {"x": x}, {"y": tf.identity(x + queue.dequeue(name="dequeue"), name="y")}

    @case("py_func")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        y = v1.py_func(lambda a: a * 2, [x], tf.float32, name="double")
        return {"x": x}, {"y": tf.identity(tf.reshape(y, [-1, 6]) + 1.0, name="y")}

    @case("random_at_inference")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        return {"x": x}, {"y": tf.identity(x + v1.random_uniform(tf.shape(x), name="noise"), name="y")}

    @case("while_loop")
    def _():
        x = v1.placeholder(tf.float32, [None, 6], name="x")
        _, y = tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, h * 2.0), [tf.constant(0), x], name="loop")
        return {"x": x}, {"y": tf.identity(y, name="y")}

    return cases


def main(out: Path) -> None:
    fallback(out, np.random.RandomState(0))
    refused_forms(out, np.random.RandomState(1))
    for name, (graph, inputs, outputs) in odd_graphs().items():
        folder = out / "odd" / name
        folder.mkdir(parents=True)
        v1.train.export_meta_graph(str(folder / "model.meta"), graph=graph)
        (folder / "manifest.json").write_text(json.dumps({"inputs": inputs, "outputs": outputs}, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
