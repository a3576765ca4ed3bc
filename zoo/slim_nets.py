"""Build TF1 networks from ``tf_slim.nets`` (code nobody on this project wrote), used as intended.

Each network runs under its own ``*_arg_scope()`` (batch norm wherever that scope provides it) with
``is_training=False`` (an inference graph: BN on moving statistics, dropout off). After
``global_variables_initializer`` every BN gets non-trivial moving statistics and perturbed
gamma / beta, so a converter that ignores or mis-reads BN fails parity; see
``make_weights_nontrivial``. Each network gets its own folder under ``--out`` (default: here)::

    <name>/model.ckpt.meta                     meta graph (reference variables, VariableV2)
    <name>/model.ckpt.index                    name-based checkpoint (global_step included)
    <name>/model.ckpt.data-00000-of-00001
    <name>/shards/shard-000.npz ... 002.npz    4 images each, float32 in [0, 1), key ``images``
    <name>/manifest.json                       inputs, outputs, tf_version, input_size (last)

Usage: ``python zoo/slim_nets.py [--out DIR] [--only NAME ...] [--force]``. Without ``--only`` it
builds every network not marked ``large`` in ``MODELS``; large ones build only when named.

tf_slim 1.1.0 is partly broken on TF 2.21; ``apply_tf_slim_shims`` (below) patches it in this
process only, before ``tf_slim`` is imported, without touching site-packages. Runs in its own
process, like zoo/build.py: tf_keras and ``disable_v2_behavior()`` must not leak into ferry.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf_slim's layers sit on the tf.compat.v1.layers classes
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore", message=r"`layer\.apply` is deprecated", category=UserWarning)

# TF1-era graphs: reference variables (VariableV2 + .../read).
tf.compat.v1.disable_v2_behavior()


def apply_tf_slim_shims() -> list[str]:
    """Make tf_slim 1.1.0 import and run on TF 2.21 / tf_keras 2.21; return what was patched.

    Call before ``import tf_slim``. Both patches are process-local and idempotent; neither edits
    site-packages nor changes what the nets build (the graphs are the ones tf_slim's code writes).

    1. ``sys.modules`` alias: ``tf_keras.legacy_tf_layers.normalization`` ->
       ``tf_keras.src.legacy_tf_layers.normalization``. ``slim.batch_norm`` with the default
       ``updates_collections=UPDATE_OPS`` -- what every net's arg scope uses -- builds
       ``tensorflow.python.layers.normalization.BatchNormalization``; TF 2.21 resolves that name
       lazily from ``tf_keras.legacy_tf_layers.normalization``, but tf_keras 2.21 ships the module
       only as ``tf_keras.src.legacy_tf_layers.normalization``, so building any BN layer raised
       ``ModuleNotFoundError: No module named 'tf_keras.legacy_tf_layers'``. The alias points the
       lazy loader at the module tf_keras does ship (the same class ``tf.compat.v1.layers`` uses).
       Needed by: resnet_v1, resnet_v2, inception_v1 (every net with BN).
    2. ``tensorflow.python.framework.ops.Tensor = tf.Tensor``. ``tf_slim.layers.utils.
       constant_value`` (behind ``utils.smart_cond``) does ``isinstance(x, ops.Tensor)``; TF 2.21
       removed that alias (the class lives in ``tensorflow.python.framework.tensor``), so it raised
       ``AttributeError``. Only ``slim.batch_norm``'s other two implementations reach it: the
       ``_fused_batch_norm`` path (``updates_collections=None``, rank-2 inputs or
       ``zero_debias_moving_mean``) and the non-fused legacy path. None of the arg scopes used
       here takes those paths, so the default nets do not need it; it is kept because
       ``updates_collections=None`` (in-place updates) is a common TF1 idiom and
       tests/test_slim_nets.py checks that it runs with the patch.
    """
    patched = []
    alias = "tf_keras.legacy_tf_layers.normalization"
    if alias not in sys.modules:
        try:
            importlib.import_module(alias)
        except ModuleNotFoundError:
            shipped = "tf_keras.src.legacy_tf_layers.normalization"
            sys.modules[alias] = importlib.import_module(shipped)
            patched.append(f"sys.modules[{alias!r}] = {shipped}")

    from tensorflow.python.framework import ops  # private module: the one tf_slim reads

    if not hasattr(ops, "Tensor"):
        ops.Tensor = tf.Tensor
        patched.append("tensorflow.python.framework.ops.Tensor = tf.Tensor")
    return patched


SHIMS = apply_tf_slim_shims()

import tf_slim as slim  # noqa: E402
from tf_slim.nets import alexnet, inception_v1, inception_v2, inception_v3, overfeat, resnet_v1, resnet_v2, vgg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import build_atomically, run_cli  # noqa: E402  (zoo/build.py: atomic folder swap, command line)

v1 = tf.compat.v1
SEED = 1234
N_SHARDS = 3
SHARD_SIZE = 4
NUM_CLASSES = 10
CKPT_NAME = "model.ckpt"


@dataclass(frozen=True)
class Net:
    """A network: ``build(images)`` returns logits, [B, C] or [B, 1, 1, C], in the default graph."""

    build: Callable[[tf.Tensor], tf.Tensor]
    input_size: int
    large: bool = False  # not built by default (big checkpoint or slow); build with --only NAME


def _small_resnet_v1(images: tf.Tensor) -> tf.Tensor:
    """resnet_v1 with 2 bottleneck blocks (base depth 16/32, 2 units each, strides 2 then 1)."""
    blocks = [
        resnet_v1.resnet_v1_block("block1", base_depth=16, num_units=2, stride=2),
        resnet_v1.resnet_v1_block("block2", base_depth=32, num_units=2, stride=1),
    ]
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        logits, _ = resnet_v1.resnet_v1(images, blocks, num_classes=NUM_CLASSES,
                                        is_training=False, global_pool=True, scope="resnet_v1")
    return logits


def _small_resnet_v2(images: tf.Tensor) -> tf.Tensor:
    """resnet_v2 (pre-activation) with the same 2 blocks as ``_small_resnet_v1``."""
    blocks = [
        resnet_v2.resnet_v2_block("block1", base_depth=16, num_units=2, stride=2),
        resnet_v2.resnet_v2_block("block2", base_depth=32, num_units=2, stride=1),
    ]
    with slim.arg_scope(resnet_v2.resnet_arg_scope()):
        logits, _ = resnet_v2.resnet_v2(images, blocks, num_classes=NUM_CLASSES,
                                        is_training=False, global_pool=True, scope="resnet_v2")
    return logits


def _inception_v1(images: tf.Tensor) -> tf.Tensor:
    """The full inception_v1 (GoogLeNet + BN). tf_slim 1.1.0's version has no ``global_pool``: its
    head is a 7x7 VALID avg pool, so the input must be 193..224 pixels (final map 7x7)."""
    with slim.arg_scope(inception_v1.inception_v1_arg_scope()):
        logits, _ = inception_v1.inception_v1(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _alexnet_v2(images: tf.Tensor) -> tf.Tensor:
    """alexnet_v2: no BN; fc6 is a 5x5 VALID conv, fc7/fc8 1x1 convs, dropout (off)."""
    with slim.arg_scope(alexnet.alexnet_v2_arg_scope()):
        logits, _ = alexnet.alexnet_v2(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _vgg_a(images: tf.Tensor) -> tf.Tensor:
    """vgg_a (VGG 11): no BN; fc6 is a 7x7x512x4096 VALID conv."""
    with slim.arg_scope(vgg.vgg_arg_scope()):
        logits, _ = vgg.vgg_a(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _vgg_16(images: tf.Tensor) -> tf.Tensor:
    """vgg_16: vgg_a with 13 convs (2-2-3-3-3); fc6 the same 7x7x512x4096 VALID conv, so 224 pixels."""
    with slim.arg_scope(vgg.vgg_arg_scope()):
        logits, _ = vgg.vgg_16(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _vgg_19(images: tf.Tensor) -> tf.Tensor:
    """vgg_19: 16 convs (2-2-4-4-4), the same head as vgg_16."""
    with slim.arg_scope(vgg.vgg_arg_scope()):
        logits, _ = vgg.vgg_19(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _overfeat(images: tf.Tensor) -> tf.Tensor:
    """overfeat: no BN; fc6 is a 6x6x1024x3072 VALID conv; its own input size is 231."""
    with slim.arg_scope(overfeat.overfeat_arg_scope()):
        logits, _ = overfeat.overfeat(images, num_classes=NUM_CLASSES, is_training=False)
    return logits


def _inception_v2(images: tf.Tensor) -> tf.Tensor:
    """inception_v2 at a quarter of its depth (``depth_multiplier=0.25``; ``min_depth`` 16): the first conv is
    a separable conv (depthwise x8 + pointwise), then BN-Inception's mixed blocks. Small inputs shrink the
    head's average pool (``_reduced_kernel_size_for_small_input``)."""
    with slim.arg_scope(inception_v2.inception_v2_arg_scope()):
        logits, _ = inception_v2.inception_v2(images, num_classes=NUM_CLASSES, is_training=False,
                                              depth_multiplier=0.25)
    return logits


def _inception_v3(images: tf.Tensor) -> tf.Tensor:
    """inception_v3 at a quarter of its depth: factorised 1x7 / 7x1 convs, VALID stem convs, the last grid's
    parallel 1x3 / 3x1 branches. No aux logits: their 5x5 VALID pool needs inputs of 107 pixels or more."""
    with slim.arg_scope(inception_v3.inception_v3_arg_scope()):
        logits, _ = inception_v3.inception_v3(images, num_classes=NUM_CLASSES, is_training=False,
                                              depth_multiplier=0.25, create_aux_logits=False)
    return logits


def _resnet_v1_101(images: tf.Tensor) -> tf.Tensor:
    """The full resnet_v1_101 (10 classes): 33 bottleneck units."""
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        logits, _ = resnet_v1.resnet_v1_101(images, num_classes=NUM_CLASSES, is_training=False,
                                            global_pool=True)
    return logits


def _resnet_v2_50(images: tf.Tensor) -> tf.Tensor:
    """The full resnet_v2_50 (10 classes): pre-activation units, ``postnorm`` before the pool."""
    with slim.arg_scope(resnet_v2.resnet_arg_scope()):
        logits, _ = resnet_v2.resnet_v2_50(images, num_classes=NUM_CLASSES, is_training=False,
                                           global_pool=True)
    return logits


def _resnet_v2_101(images: tf.Tensor) -> tf.Tensor:
    """The full resnet_v2_101 (10 classes): 33 pre-activation units."""
    with slim.arg_scope(resnet_v2.resnet_arg_scope()):
        logits, _ = resnet_v2.resnet_v2_101(images, num_classes=NUM_CLASSES, is_training=False,
                                            global_pool=True)
    return logits


def _resnet_v1_50(images: tf.Tensor) -> tf.Tensor:
    """The full resnet_v1_50, 1000 classes, as published (a benchmark-sized model)."""
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        logits, _ = resnet_v1.resnet_v1_50(images, num_classes=1000, is_training=False,
                                           global_pool=True)
    return logits


MODELS: dict[str, Net] = {
    "slim_resnet_v1": Net(_small_resnet_v1, input_size=64),
    "slim_resnet_v2": Net(_small_resnet_v2, input_size=64),
    "slim_inception_v1": Net(_inception_v1, input_size=224),
    # Checkpoint sizes with 10 classes: resnets 0.3 MB, inception_v1 22.5 MB, alexnet_v2 185 MB
    # (46.3 M parameters, 43 M of them in fc6/fc7), vgg_a 515 MB (128.8 M; fc6 alone is
    # 7x7x512x4096 = 102.8 M), overfeat 567 MB (141.7 M; fc6 6x6x1024x3072 = 113.2 M);
    # resnet_v1_50 with 1000 classes 102.5 MB (25.6 M), ~20 s to build on 2 CPU cores.
    "slim_alexnet_v2": Net(_alexnet_v2, input_size=224),
    "slim_vgg_a": Net(_vgg_a, input_size=224, large=True),
    "slim_overfeat": Net(_overfeat, input_size=231, large=True),
    # fc6 needs the 7x7 map of a 224-pixel input: vgg_16 134.3 M parameters (537 MB), vgg_19 139.6 M (559 MB).
    "slim_vgg_16": Net(_vgg_16, input_size=224, large=True),
    "slim_vgg_19": Net(_vgg_19, input_size=224, large=True),
    "slim_resnet_v1_50": Net(_resnet_v1_50, input_size=224, large=True),
    "slim_inception_v2": Net(_inception_v2, input_size=96),
    "slim_inception_v3": Net(_inception_v3, input_size=128, large=True),  # 94 BN layers: ~30 s to build
    # The full depth at a small input: ~42.5 M / ~23.5 M parameters (170 / 94 MB checkpoints).
    "slim_resnet_v1_101": Net(_resnet_v1_101, input_size=64, large=True),
    "slim_resnet_v2_50": Net(_resnet_v2_50, input_size=64, large=True),
    "slim_resnet_v2_101": Net(_resnet_v2_101, input_size=64, large=True),  # ~42.5 M parameters
}
DEFAULT = [name for name, net in MODELS.items() if not net.large]


def _ancestors(tensor: tf.Tensor) -> set[tf.Operation]:
    """Every op `tensor` depends on (data and control inputs), `tensor.op` included."""
    seen: set[tf.Operation] = set()
    stack = [tensor.op]
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return seen


def make_weights_nontrivial(sess: v1.Session, images: tf.Tensor, probs: tf.Tensor,
                            batch: np.ndarray, rng: np.random.RandomState) -> dict[str, int]:
    """Give BN non-trivial statistics and keep the network's output informative; return counts.

    Fresh initial values make a poor parity fixture: BN with moving_mean 0 / moving_variance 1 /
    gamma 1 / beta 0 is nearly the identity (a converter that drops BN would pass), and with
    purely random statistics the activations drift layer by layer (resnet_v1_50 saturates its
    softmax at exactly 1.0, inception_v1 gives the same probs for every image). So, in the
    order the graph computes them, on a calibration `batch` (not one of the shards):

    * every BN (``FusedBatchNorm*`` op): gamma ~ 1 + N(0, 0.1), beta ~ N(0, 0.1) (set first);
      moving_mean ~ m + 0.1 * N(0, 1) * s and moving_variance ~ v * U(0.5, 1.5), where m, v = s**2
      are the per-channel mean and variance of the activations the BN op receives;
    * every Conv2D not followed by BN (biased convs: alexnet/vgg/overfeat layers, logits, and
      resnet_v2's conv3/shortcut/root conv): weights scaled so the conv's output has std 1.

    The variables are found through the ops' inputs (``.../read`` -> ``VariableV2``), not by name.
    """
    graph = images.graph
    by_name = {v.op.name: v for v in v1.global_variables()}

    def variable(t: tf.Tensor) -> tf.Variable | None:  # '.../read' Identity -> its variable
        op = t.op.inputs[0].op if t.op.type == "Identity" else t.op
        return by_name.get(op.name) if op.type == "VariableV2" else None

    def load(var: tf.Variable, value: np.ndarray) -> None:
        var.load(value.astype(var.dtype.base_dtype.as_numpy_dtype), sess)

    needed = _ancestors(probs)
    ops = [op for op in graph.get_operations() if op in needed]  # creation order is topological
    bn_ops = [op for op in ops if op.type.startswith("FusedBatchNorm")]
    for op in bn_ops:
        if op.get_attr("data_format") != b"NHWC":
            raise NotImplementedError(f"{op.name}: data_format {op.get_attr('data_format')}")
        gamma, beta = variable(op.inputs[1]), variable(op.inputs[2])
        if gamma is not None:  # scale=False: a constant 1, no variable
            load(gamma, 1.0 + 0.1 * rng.normal(size=gamma.shape.as_list()))
        if beta is not None:
            load(beta, 0.1 * rng.normal(size=beta.shape.as_list()))

    # Calibration targets: every BN op, and every conv whose output no BN op normalizes. A target
    # waits for the targets upstream of it; independent ones (inception's branches, a resnet
    # unit's shortcut) share a wave and one session.run.
    def is_bn(op: tf.Operation) -> bool:
        return op.type.startswith("FusedBatchNorm")

    def is_target(op: tf.Operation) -> bool:
        return is_bn(op) or (op.type == "Conv2D"
                             and not any(is_bn(c) for c in op.outputs[0].consumers()))

    depth: dict[tf.Operation, int] = {}  # targets on the longest path ending at the op
    waves: list[list[tf.Operation]] = []
    for op in ops:
        upstream = max((depth.get(t.op, 0) for t in op.inputs), default=0)
        if is_target(op):
            if upstream == len(waves):
                waves.append([])
            waves[upstream].append(op)
            upstream += 1
        depth[op] = upstream

    feed = {images: batch}
    counts = {"bn": 0, "conv_rescaled": 0, "waves": len(waves)}
    for wave in waves:
        fetched = sess.run([op.inputs[0] if is_bn(op) else op.outputs[0] for op in wave], feed)
        for op, x in zip(wave, fetched):
            if is_bn(op):
                mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
                var = x.var(axis=(0, 1, 2), dtype=np.float64)
                var = np.maximum(var, 1e-2 * var.mean() + 1e-6)  # channels dead on this batch
                shift = 0.1 * rng.normal(size=mean.shape) * np.sqrt(var)
                load(variable(op.inputs[3]), mean + shift)
                load(variable(op.inputs[4]), var * rng.uniform(0.5, 1.5, size=var.shape))
                counts["bn"] += 1
            else:
                kernel = variable(op.inputs[1])
                load(kernel, sess.run(kernel) / max(float(x.std(dtype=np.float64)), 1e-6))
                counts["conv_rescaled"] += 1
    return counts


def check_informative(name: str, probs: np.ndarray) -> None:
    """Raise unless `probs` are finite distributions, not saturated, and differ between images."""
    if not (np.all(np.isfinite(probs)) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)):
        raise RuntimeError(f"{name}: probs are not finite distributions: {probs}")
    if probs.max() > 0.999 or probs.std(axis=0).max() < 1e-3:
        raise RuntimeError(f"{name}: probs saturated or the same for every image: {probs}")


def write_model(name: str, folder: Path, size: int | None = None) -> dict:
    """Build network `name` at input `size` into `folder`; return a summary for the log line."""
    net = MODELS[name]
    size = size or net.input_size
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(SEED)
        images = v1.placeholder(tf.float32, [None, size, size, 3], name="images")
        logits = net.build(images)
        if logits.shape.rank == 4:  # [B, 1, 1, C] (resnet has no spatial_squeeze in tf_slim)
            logits = tf.squeeze(logits, [1, 2], name="logits_squeezed")
        probs = tf.nn.softmax(logits, name="probs")
        v1.train.get_or_create_global_step()  # checkpoints look like training ones
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            calibration = np.random.RandomState(SEED + 2).uniform(size=(SHARD_SIZE, size, size, 3))
            counts = make_weights_nontrivial(sess, images, probs, calibration.astype(np.float32),
                                             np.random.RandomState(SEED))
            # write_state=False: no 'checkpoint' file, which would record the temporary path.
            saver.save(sess, str(folder / CKPT_NAME), write_meta_graph=True, write_state=False)

            shards = folder / "shards"
            shards.mkdir()
            rng = np.random.RandomState(SEED + 1)
            for i in range(N_SHARDS):
                batch = rng.uniform(size=(SHARD_SIZE, size, size, 3)).astype(np.float32)
                np.savez(shards / f"shard-{i:03d}.npz", images=batch)
                if i == 0:  # one forward pass: a distribution that depends on the image
                    p = sess.run(probs, {images: batch})
                    check_informative(name, p)
        n_params = int(sum(np.prod(v.shape.as_list()) for v in v1.trainable_variables()))

    manifest = {
        "name": name,
        "inputs": {"images": images.name},
        "outputs": {"probs": probs.name},
        "tf_version": tf.__version__,
        "input_size": size,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ckpt_bytes = sum(p.stat().st_size for p in folder.glob(f"{CKPT_NAME}.*") if p.suffix != ".meta")
    return {"keys": len(tf.train.list_variables(str(folder / CKPT_NAME))), "params": n_params,
            "mb": ckpt_bytes / 1e6, **counts}


def build_one(name: str, out: Path, force: bool, size: int | None = None) -> None:
    """Build one network atomically, unless a complete build is there already."""
    if (out / name / "manifest.json").exists() and not force:
        print(f"{name:<18} skipped (already built; --force to rebuild)", flush=True)
        return
    info, took = build_atomically(name, out, lambda folder: write_model(name, folder, size))
    print(f"{name:<18} {info['keys']:4d} checkpoint variables, "
          f"{info['params'] / 1e6:6.2f} M params, {info['mb']:6.1f} MB, "
          f"{info['bn']:2d} BN calibrated, {info['conv_rescaled']:2d} convs rescaled "
          f"({info['waves']} waves), {took:5.1f} s", flush=True)


def build_resnet_v1_50(out: Path, size: int = 224, *, force: bool = False) -> Path:
    """Write the full resnet_v1_50 (1000 classes) into ``out/slim_resnet_v1_50``; return the folder.

    For benchmarks; not part of the default build (``--only slim_resnet_v1_50`` reaches it too).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_one("slim_resnet_v1_50", out, force, size)
    return out / "slim_resnet_v1_50"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return run_cli(argv, "Build TF1 networks from tf_slim.nets.", MODELS, DEFAULT, build_one, "slim nets",
                   f"; shims: {SHIMS or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
