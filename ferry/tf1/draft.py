"""What ferry can tell about a TF1 artifact from one import of its graph (`survey`), and the spec drafted
from it (`draft_spec`): the editable `graph` form for `ferry draft-spec`, `architecture: auto` (or a
skeleton naming what blocks it) for `ferry scan`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import tensorflow as tf
import yaml

from ferry.files import project_root, write_atomically
from ferry.shards import ShardError, array_headers
from ferry.spec import Source
from ferry.tf1.auto import Translation, UnsupportedGraph, translate
from ferry.tf1.formats import READERS
from ferry.tf1.inventory import build_inventory
from ferry.tf1.load import as_source, load_graph


def serving_name(op_name: str) -> str:
    """A TF1 op name as a serving name (an identifier)."""
    name = re.sub(r"\W", "_", op_name)
    return name if re.match(r"[A-Za-z_]", name) else f"t_{name}"


def guess_signature(inventory: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) as serving name -> tensor: the placeholders (or what an input pipeline feeds the
    model with), and the ops nothing reads."""
    inputs = {serving_name(p["name"]): p["tensor"] for p in inventory["placeholders"]}
    outputs = {serving_name(o["name"]): o["tensor"] for o in inventory["outputs"]}
    return inputs, outputs


@dataclass
class Survey:
    """One artifact, surveyed: its inventory, its signature (declared by a SavedModel, else guessed), and
    whether `auto` translates it (the translation, or the op types that block it, one node each)."""

    source: Source
    inventory: dict
    inputs: dict[str, str]
    outputs: dict[str, str]
    declared: bool  # the signature is the artifact's own (a SavedModel's SignatureDef)
    serialized: str | None = None  # the string tensor it parses tf.Examples from (inputs: the parsed features)
    translation: Translation | None = None
    blockers: dict[str, str] = field(default_factory=dict)


PARSE_OPS = frozenset({"ParseExample", "ParseExampleV2"})


def parsed_inputs(graph: tf.Graph, serialized: str) -> dict[str, str] | None:
    """Where the graph's own parse ops hand the features of the serialized tf.Examples fed at `serialized` (a
    string tensor) to the model, by feature key: a dense feature's parse output, a var-length one's
    `SparseToDense`; None when no parse op reads `serialized`."""
    tensor = graph.get_tensor_by_name(serialized)
    if tensor.dtype != tf.string:
        return None
    found: dict[str, str] = {}
    for op in (c for c in tensor.consumers() if c.type in PARSE_OPS and c.inputs[0] is tensor):
        if op.type == "ParseExampleV2":
            n_sparse = op.get_attr("num_sparse")
            sparse_keys, dense_keys = (tf.get_static_value(op.inputs[i]) for i in (2, 3))
        else:  # the TF 1.x op: one key tensor per feature
            n_sparse, n_dense = op.get_attr("Nsparse"), op.get_attr("Ndense")
            keys = [tf.get_static_value(t) for t in op.inputs[2:2 + n_sparse + n_dense]]
            sparse_keys, dense_keys = keys[:n_sparse], keys[n_sparse:]
        if sparse_keys is None or dense_keys is None or any(k is None for k in [*sparse_keys, *dense_keys]):
            continue  # keys fed at run time: nothing to name
        for i, key in enumerate(dense_keys):
            found[serving_name(key.decode())] = op.outputs[3 * n_sparse + i].name
        for j, key in enumerate(sparse_keys):
            dense = [c for c in op.outputs[j].consumers() if c.type == "SparseToDense"]
            if dense:
                found[serving_name(key.decode())] = dense[0].outputs[0].name
    return found or None


def named_after_data(inputs: dict[str, str], shards: Path) -> dict[str, str]:
    """Guessed inputs renamed after the verification data's keys where that is unambiguous: a serving name
    the shards hold stays, and a lone unmatched input takes a lone unmatched key (an Estimator's
    `IteratorGetNext:0` fed from arrays keyed `features`)."""
    files = sorted(shards.parent.glob(shards.name))
    try:
        keys = list(array_headers(files[0])) if files else []
    except ShardError:
        return inputs
    spare_inputs = [name for name in inputs if name not in keys]
    spare_keys = [key for key in keys if key not in inputs and re.fullmatch(r"[A-Za-z_]\w*", key)]
    if len(spare_inputs) == len(spare_keys) == 1:
        return {spare_keys[0] if name == spare_inputs[0] else name: tensor for name, tensor in inputs.items()}
    return inputs


def survey(artifact: Source | str | Path) -> Survey:
    """Survey an artifact from one import of its graph (inventory and `auto` share it)."""
    source = as_source(artifact)
    inventory = build_inventory(source)
    declared = READERS[source.format].signature(source)
    inputs, outputs = declared or guess_signature(inventory)
    if not declared:
        inputs = named_after_data(inputs, default_shards(source))
    found = Survey(source, inventory, inputs, outputs, declared is not None)
    parsed = parsed_inputs(load_graph(source), next(iter(inputs.values()))) if len(inputs) == 1 else None
    if parsed:  # an Estimator-style serving graph: translated from what its parse ops make of the records
        found.serialized, found.inputs = next(iter(inputs.values())), parsed
    if found.inputs and outputs:
        try:
            found.translation = translate(load_graph(source), found.inputs, outputs, str(source.artifact))
        except UnsupportedGraph as exc:
            found.blockers = exc.found
    return found


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


def default_shards(source: Source, pattern: str = "*.npz") -> Path:
    """Where verification data usually lies: `shards/*.npz` (or `pattern`) beside the artifact, or beside its
    folder."""
    for folder in (source.artifact.parent, source.artifact.parent.parent):
        if (folder / "shards").is_dir():
            return folder / "shards" / pattern
    return source.artifact.parent / "shards" / pattern


def draft_spec(artifact: Source | str | Path | Survey, out: Path, name: str | None = None, shards: str | None = None,
               form: str = "graph") -> str:
    """The spec text for `out` (paths relative to it): the `graph` form (layers named after TF1 scopes, one
    exact name-map rule per variable) or `auto`; where `auto` cannot translate the graph, a skeleton whose
    comments name the op types that block it."""
    found = artifact if isinstance(artifact, Survey) else survey(artifact)
    source, out = found.source, Path(out).resolve()
    if not found.inputs or not found.outputs:
        raise ValueError(f"{source.artifact}: cannot guess the graph's inputs ({list(found.inputs)}) and outputs "
                         f"({list(found.outputs)}); write them under source.inputs/outputs")
    if form == "graph" and found.translation is None:
        raise UnsupportedGraph(found.blockers, str(source.artifact))
    name = name or out.stem

    def rel(path: Path | str) -> str:
        return os.path.relpath(path, out.parent)

    lines = [f"# Drafted by ferry from {source.artifact.name} ({source.format}) on {date.today()}: edit freely."]
    if found.serialized:
        lines.append(f"# The graph parses the serialized tf.Examples fed at {found.serialized}: the inputs are what "
                     "its parse ops make of them, by feature key.")
    elif found.declared:
        lines.append("# Inputs and outputs are the SavedModel's own signature.")
    else:
        lines.append("# Inputs and outputs were guessed from the graph (placeholders; ops nothing reads): confirm "
                     "them.")
    lines += [f"name: {name}", "source:", f"  {source.format}: {json.dumps(rel(source.artifact))}"]
    if source.format == "estimator_dir":
        lines.append("  checkpoint: latest")
    if not found.declared or found.serialized:
        lines += [f"  inputs: {_flow(found.inputs)}", f"  outputs: {_flow(found.outputs)}"]
    if found.translation is None:
        lines += ["# `architecture: auto` cannot translate these op types (one node each): write the model as",
                  "# `architecture: {factory: module:function}` (see README) and the name map it needs.",
                  *[f"#   {op_type}: {node}" for op_type, node in sorted(found.blockers.items())],
                  "architecture: auto", "name_map:", "  skip: [optimizer]"]
    elif form == "auto":
        lines += _fallback_comment(found.translation.fallbacks)
        lines += ["architecture: auto", "name_map:", "  skip: [optimizer]"]
    else:
        derived = found.translation
        lines += _fallback_comment(derived.fallbacks)
        lines += ["architecture:", "  graph:", "    nodes:", *[f"      - {_flow(node)}" for node in derived.nodes],
                  f"    outputs: {_flow(derived.outputs)}", "name_map:", "  skip: [optimizer]", "  rules:",
                  *[f"    - {_flow(rule)}" for rule in derived.rules]]
    data = default_shards(source, "*.tfrecord*" if found.serialized else "*.npz")
    lines += ["verify:", f"  shards: {json.dumps(rel(shards or data))}"]
    if found.serialized:
        lines += ["  # TFRecord files of tf.Example (GZIP as *.gz), fed as they are to the graph, which parses them",
                  f"  tfrecord: {{serialized: {json.dumps(found.serialized)}}}"]
    lines += ["export:", f"  dir: {json.dumps(rel(project_root(out) / 'exports' / name))}", ""]
    return "\n".join(lines)


def _fallback_comment(fallbacks: dict[str, str]) -> list[str]:
    """Comment lines naming the op types run as raw TF ops (`ferry.RawOp`), one node each."""
    if not fallbacks:
        return []
    return ["# Warning: these op types have no translation and run as raw TF ops (`ferry.RawOp`; the .keras model",
            "# then needs the TensorFlow backend):", *[f"#   {t}: {n}" for t, n in sorted(fallbacks.items())]]


def write_draft(artifact: Path, out: Path, name: str | None = None, shards: str | None = None,
                force: bool = False) -> Path:
    """Write the drafted spec (graph form) to `out` (atomically; an existing file only with `force`)."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    text = draft_spec(artifact, out, name, shards)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, text)
    return out


def scan_one(path: str, spec_path: str, name: str) -> dict:
    """`ferry scan`'s row for one artifact, surveyed once, with its drafted spec (`spec`: text for
    `spec_path`, `architecture: auto` where it translates)."""
    found = survey(Path(path))
    inventory, source = found.inventory, found.source
    from ferry.sources import FORMATS

    files = [*FORMATS[source.format].graph_files(source), *FORMATS[source.format].weight_files(source)]
    weights = [v for v in inventory["variables"] if not v["training_only"]]
    row = {"path": path, "name": name, "format": source.format,
           "size_mb": round(sum(f.stat().st_size for f in set(files) if f.is_file()) / 1e6, 3),
           "variables": sum(v["kind"] != "constant" for v in weights),
           "constants": sum(v["kind"] == "constant" for v in weights),
           "ops": sum(inventory["op_types"].values()),
           "top_ops": dict(list(inventory["op_types"].items())[:8]),
           "auto": found.translation is not None, "blockers": found.blockers,
           "fallback_ops": found.translation.fallbacks if found.translation else {},
           "inputs": found.inputs, "outputs": found.outputs, "error": ""}
    try:
        row["spec"] = draft_spec(found, Path(spec_path), name, form="auto")
    except ValueError as exc:  # no inputs or outputs to guess: the row says so, no spec
        row["error"] = str(exc)
    return row
