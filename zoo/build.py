"""Build the example zoo: real TF1-era models written with real TF1 APIs.

Each model gets its own folder under ``--out`` (default: this folder)::

    <name>/model.ckpt.meta                     meta graph (reference variables, VariableV2)
    <name>/model.ckpt.index                    name-based checkpoint, optimizer state included
    <name>/model.ckpt.data-00000-of-00001
    <name>/shards/shard-000.npz ... 003.npz    float32 inputs, keyed by placeholder name
    <name>/manifest.json                       inputs, outputs, tf_version (written last)

Usage: ``python zoo/build.py [--out DIR] [--only NAME ...] [--force]``.

Runs in its own process: it needs ``tf_keras`` for ``tf.compat.v1.layers`` and calls
``disable_v2_behavior()``, neither of which may leak into ferry itself (see DESIGN.md).
To add a model, write one ``build_<name>`` function and register it in ``MODELS``.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers needs tf_keras on TF >= 2.16
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# The deprecation notices of tf.compat.v1 are expected here; keep the progress lines readable.
tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore", message=r"`tf\.layers\.\w+` is deprecated", category=UserWarning)

# TF1-era graphs: reference variables (VariableV2 + .../read) and v1 control flow.
tf.compat.v1.disable_v2_behavior()

v1 = tf.compat.v1
SEED = 1234
N_SHARDS = 4
CKPT_NAME = "model.ckpt"

Feed = dict  # feed_dict: placeholder tensor -> numpy array


@dataclass
class Built:
    """What a model builder returns; the graph it built is the default graph."""

    inputs: dict[str, tf.Tensor]  # placeholder name -> placeholder (serving inputs only)
    outputs: dict[str, tf.Tensor]  # output name -> tensor
    train_op: tf.Operation
    train_feeds: list[Feed]  # one feed_dict per training step
    shard: Callable[[np.random.RandomState], dict[str, np.ndarray]]  # one verification shard


def build_linear(rng: np.random.RandomState) -> Built:
    """y = 3x + 2 with one dense unit; Momentum optimizer, 20 steps."""
    x = v1.placeholder(tf.float32, [None, 1], name="x")
    target = v1.placeholder(tf.float32, [None, 1], name="target")
    y = tf.identity(v1.layers.dense(x, 1), name="y")
    loss = v1.losses.mean_squared_error(target, y)
    train_op = v1.train.MomentumOptimizer(0.01, 0.9).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = []
    for _ in range(20):
        xs = rng.normal(size=(32, 1)).astype(np.float32)
        ys = (3.0 * xs + 2.0 + 0.1 * rng.normal(size=xs.shape)).astype(np.float32)
        feeds.append({x: xs, target: ys})
    return Built(
        inputs={"x": x},
        outputs={"y": y},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"x": r.normal(size=(64, 1)).astype(np.float32)},
    )


def build_mlp(rng: np.random.RandomState) -> Built:
    """784-64-128-10 MLP with softmax; Adam, 10 steps on random data."""
    x = v1.placeholder(tf.float32, [None, 784], name="x")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.dense(x, 64, activation=tf.nn.relu)
    h = v1.layers.dense(h, 128, activation=tf.nn.relu)
    logits = v1.layers.dense(h, 10)
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {x: rng.uniform(size=(32, 784)).astype(np.float32), labels: rng.randint(0, 10, size=32)}
        for _ in range(10)
    ]
    return Built(
        inputs={"x": x},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"x": r.uniform(size=(64, 784)).astype(np.float32)},
    )


def build_mnist_cnn(rng: np.random.RandomState) -> Built:
    """Two conv/max-pool blocks, flatten, dense 10, softmax; Adam, 5 steps."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.conv2d(images, 32, 3, activation=tf.nn.relu)
    h = v1.layers.max_pooling2d(h, pool_size=2, strides=2)
    h = v1.layers.conv2d(h, 64, 3, activation=tf.nn.relu)
    h = v1.layers.max_pooling2d(h, pool_size=2, strides=2)
    h = v1.layers.flatten(h)
    logits = v1.layers.dense(h, 10)
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {
            images: rng.uniform(size=(16, 28, 28, 1)).astype(np.float32),
            labels: rng.randint(0, 10, size=16),
        }
        for _ in range(5)
    ]
    return Built(
        inputs={"images": images},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"images": r.uniform(size=(32, 28, 28, 1)).astype(np.float32)},
    )


MODELS: dict[str, Callable[[np.random.RandomState], Built]] = {
    "linear": build_linear,
    "mlp": build_mlp,
    "mnist_cnn": build_mnist_cnn,
}


def write_model(name: str, folder: Path) -> tuple[int, int]:
    """Build, train and save model `name` into `folder`; return (checkpoint keys, train steps)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(SEED)
        built = MODELS[name](np.random.RandomState(SEED))
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for feed in built.train_feeds:
                sess.run(built.train_op, feed_dict=feed)
            # write_state=False: no 'checkpoint' file, which would record the temporary path.
            saver.save(sess, str(folder / CKPT_NAME), write_meta_graph=True, write_state=False)

    shards = folder / "shards"
    shards.mkdir()
    rng = np.random.RandomState(SEED + 1)
    for i in range(N_SHARDS):
        arrays = built.shard(rng)
        assert set(arrays) == set(built.inputs), (name, sorted(arrays), sorted(built.inputs))
        np.savez(shards / f"shard-{i:03d}.npz", **arrays)

    manifest = {
        "name": name,
        "inputs": {k: t.name for k, t in built.inputs.items()},
        "outputs": {k: t.name for k, t in built.outputs.items()},
        "tf_version": tf.__version__,
        "train_steps": len(built.train_feeds),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    n_keys = len(tf.train.list_variables(str(folder / CKPT_NAME)))
    return n_keys, len(built.train_feeds)


def build_one(name: str, out: Path, force: bool) -> None:
    """Build one model atomically: temp sibling folder, renamed into place when complete."""
    final = out / name
    if (final / "manifest.json").exists() and not force:
        print(f"{name:<10} skipped (already built; --force to rebuild)", flush=True)
        return
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the final folder should be readable like any other
    old: Path | None = None
    try:
        n_keys, steps = write_model(name, tmp)
        if final.exists():  # incomplete leftover, or --force: move aside, then swap in
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out))
            os.replace(final, old / name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists() and (old / name).exists():
            os.replace(old / name, final)  # put the previous build back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    took = time.perf_counter() - start
    print(f"{name:<10} {n_keys:3d} checkpoint variables, {steps:2d} steps, {took:5.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Build the TF1-era example model zoo.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder holding this script)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help=f"build only these models (known: {', '.join(MODELS)})")
    parser.add_argument("--force", action="store_true", help="rebuild models already built")
    args = parser.parse_args(argv)

    names = args.only or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}; known models: {', '.join(MODELS)}")

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in dict.fromkeys(names):  # dedupe, keep order
        build_one(name, args.out, args.force)
    print(f"zoo: {len(set(names))} model(s) in {args.out} ({time.perf_counter() - start:.1f} s, "
          f"TF {tf.__version__})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
