"""`ferry draft-spec`: an editable spec in the `graph` form, derived from a `.meta` graph."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path

import yaml

from ferry.files import project_root, write_atomically
from ferry.tf1.auto import translate
from ferry.tf1.inventory import build_inventory
from ferry.tf1.load import load_graph


def serving_name(op_name: str) -> str:
    """A TF1 op name as a serving name (an identifier)."""
    name = re.sub(r"\W", "_", op_name)
    return name if re.match(r"[A-Za-z_]", name) else f"t_{name}"


def guess_signature(inventory: dict) -> tuple[dict[str, str], dict[str, str]]:
    """(inputs, outputs) as serving name -> tensor: the placeholders, and the ops nothing reads."""
    inputs = {serving_name(p["name"]): p["tensor"] for p in inventory["placeholders"]}
    outputs = {serving_name(o["name"]): o["tensor"] for o in inventory["outputs"]}
    return inputs, outputs


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


def draft_spec(meta: Path, out: Path, name: str | None = None, shards: str | None = None) -> str:
    """The spec text: inputs and outputs guessed from the graph, layers named after TF1 scopes,
    one exact name-map rule per variable; paths relative to `out`."""
    meta, out = Path(meta).resolve(), Path(out).resolve()
    inventory = build_inventory(meta)
    inputs, outputs = guess_signature(inventory)
    if not inputs or not outputs:
        raise ValueError(f"{meta}: cannot guess the graph's inputs ({list(inputs)}) and outputs ({list(outputs)})")
    derived = translate(load_graph(meta), inputs, outputs, str(meta))
    name = name or out.stem
    here = out.parent

    def rel(path: Path | str) -> str:
        return os.path.relpath(path, here)

    shard_glob = shards or str(meta.parent / "shards" / "*.npz")
    export = project_root(out) / "exports" / name
    lines = [
        f"# Drafted by `ferry draft-spec` from {meta.name} on {date.today()}: edit freely.",
        "# Inputs and outputs were guessed from the graph (placeholders; ops nothing reads): confirm them.",
        f"name: {name}",
        "source:",
        f"  meta: {json.dumps(rel(meta))}",
        f"  inputs: {_flow(inputs)}",
        f"  outputs: {_flow(outputs)}",
        "architecture:",
        "  graph:",
        "    nodes:",
        *[f"      - {_flow(node)}" for node in derived.nodes],
        f"    outputs: {_flow(derived.outputs)}",
        "name_map:",
        "  skip: [optimizer]",
        "  rules:",
        *[f"    - {_flow(rule)}" for rule in derived.rules],
        "verify:",
        f"  shards: {json.dumps(rel(shard_glob))}",
        "export:",
        f"  dir: {json.dumps(rel(export))}",
        "",
    ]
    return "\n".join(lines)


def write_draft(meta: Path, out: Path, name: str | None = None, shards: str | None = None,
                force: bool = False) -> Path:
    """Write the drafted spec to `out` (atomically; an existing file only with `force`)."""
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    text = draft_spec(meta, out, name, shards)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, text)
    return out
