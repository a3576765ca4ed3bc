"""`ferry scan DIR`: find every TF1 model under a folder, in any of the four formats, survey each once (in
a process of its own: a broken or crashing file ends in its own row, the scan goes on), and draft a spec
per model and one catalogue over them, ready for `ferry validate` and `ferry run`.

The report is a table (printed, with progress on the way), `scan.json` beside the catalogue, and the
Prefect table artifact `ferry-scan-<folder>`.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from ferry.files import write_atomically
from ferry.isolation import ModelProcess, RemoteError
from ferry.review.summary import text_table
from ferry.sources import FORMATS, detect

SCAN_TIMEOUT = 600  # seconds one artifact may take to survey


def find_models(root: Path) -> list[tuple[Path, str | None]]:
    """Every artifact under `root` that looks like a TF1 model: (path, format), in path order. A SavedModel
    or Estimator folder is one model (its files are not looked at one by one); a `.pb` whose format the
    survey disproves gets an error row then."""
    found: list[tuple[Path, str | None]] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        here = Path(folder)
        kind = detect(here)
        if kind is not None:
            found.append((here, kind))
            dirs.clear()
            continue
        for name in sorted(files):
            kind = detect(here / name)
            if kind is not None:
                found.append((here / name, kind))
    return found


def model_name(path: Path, taken: set[str]) -> str:
    """A model name from where it lies: the folder of a `model.ckpt.meta`, `frozen*.pb`, `model_dir` or
    versioned SavedModel; else the file's stem. Unique among `taken`."""
    generic = re.fullmatch(r"(model\.ckpt(-\d+)?\.meta|frozen.*\.pb|model_dir|saved_?model|\d+)", path.name)
    stem = (path.parent.name if generic else path.name.split(".")[0]) or "model"
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "model"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def scan(root: Path, out: Path, say=print) -> list[dict[str, Any]]:
    """Survey every model under `root`; write `out/models/<name>.yaml`, `out/catalogue.yaml`, `out/scan.json`
    (nothing is written for a model whose survey failed, its row says why); return the rows."""
    root, out = Path(root).resolve(), Path(out).resolve()
    candidates = find_models(root)
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    (out / "models").mkdir(parents=True, exist_ok=True)
    for i, (path, kind) in enumerate(candidates, 1):
        name = model_name(path, taken)
        spec_path = out / "models" / f"{name}.yaml"
        start = time.monotonic()
        try:
            with ModelProcess(f"scan-{name}") as process:
                row = process.call("ferry.tf1.draft:scan_one", str(path), str(spec_path), name, stage="scan",
                                   timeout=SCAN_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a broken file is a row, never the end of the scan
            said = (str(exc).splitlines() or [type(exc).__name__])[0]
            row = {"path": str(path), "name": name, "format": kind, "auto": False, "blockers": {},
                   "error": said[:500] if isinstance(exc, (RemoteError, ValueError)) else f"{type(exc).__name__}: "
                                                                                           f"{said}"[:500]}
        row["seconds"] = round(time.monotonic() - start, 2)
        spec = row.pop("spec", None)
        if spec:
            write_atomically(spec_path, spec)
            row["spec"] = str(spec_path.relative_to(out))
        rows.append(row)
        say(progress(i, len(candidates), path.relative_to(root), row))
    write_atomically(out / "catalogue.yaml", catalogue_text(root, rows))
    write_atomically(out / "scan.json", json.dumps({"root": str(root), "models": rows}, indent=1))
    return rows


def progress(done: int, total: int, path: Path, row: dict[str, Any]) -> str:
    """`[####......] 4/10 zoo/mlp/model.ckpt.meta: meta, auto` (or the error)."""
    width = 20
    bar = "#" * round(width * done / total) + "." * (width - round(width * done / total))
    what = row["error"] or f"{row['format']}, {'auto' if row['auto'] else 'blocked: ' + ', '.join(row['blockers'])}"
    return f"[{bar}] {done}/{total} {path}: {what}"


def catalogue_text(root: Path, rows: list[dict[str, Any]]) -> str:
    """A catalogue over the drafted specs."""
    drafted = sum(1 for r in rows if r.get("spec"))
    return "\n".join([
        f"# Drafted by `ferry scan {root.name}`: {drafted} of {len(rows)} models (scan.json has every row).",
        "defaults:",
        "  name_map: {skip: [optimizer], strict: true}",
        "  verify: {batch_size: 64, tolerance: {atol: 1.0e-5, rtol: 1.0e-5}}",
        f"tracking: {{experiment: {json.dumps(f'ferry scan {root.name}')}}}",
        "models: [models/*.yaml]",
        ""])


def table(rows: list[dict[str, Any]]) -> str:
    """The scan's report as fixed-width text, one row per model."""
    keys = ["name", "format", "size_mb", "variables", "constants", "ops", "auto", "seconds"]

    def cell(row: dict[str, Any], key: str) -> str:
        value = row.get(key, "")
        return "yes" if value is True else "no" if value is False else "-" if value in ("", None) else str(value)

    def note(row: dict[str, Any]) -> str:
        if row.get("error"):
            return row["error"]
        if row.get("blockers"):
            return "auto blocked by " + "; ".join(f"{t} ({n})" for t, n in sorted(row["blockers"].items()))
        if row.get("fallback_ops"):
            return ("auto runs as raw TF ops (ferry.RawOp, TensorFlow backend only): "
                    + "; ".join(f"{t} ({n})" for t, n in sorted(row["fallback_ops"].items())))
        return ""

    return text_table(rows, keys, cell, note)


def report_artifact(root: Path, rows: list[dict[str, Any]]) -> None:
    """The report as the Prefect table artifact `ferry-scan-<folder>`."""
    from prefect.artifacts import create_table_artifact

    columns = ["name", "format", "path", "size_mb", "variables", "constants", "ops", "auto", "seconds", "error"]
    key = "ferry-scan-" + (re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-") or "folder")
    create_table_artifact([{c: str(r.get(c, "")) for c in columns} for r in rows], key=key,
                          description=f"ferry scan of {root}")


def main(root: Path, out: Path) -> list[dict[str, Any]]:
    """`ferry scan`: the scan as a Prefect flow run (its report an artifact of it), progress on stderr."""
    from prefect import flow

    @flow(name="scan-models", flow_run_name=f"scan-{root.name}")
    def scan_models() -> list[dict[str, Any]]:
        rows = scan(root, out, lambda line: print(line, file=sys.stderr, flush=True))
        report_artifact(root, rows)
        return rows

    return scan_models()


__all__ = ["FORMATS", "find_models", "main", "model_name", "scan", "table"]
