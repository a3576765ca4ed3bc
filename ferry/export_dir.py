"""The export folder (`export.dir`) and what may be done to it, without TensorFlow or Keras (the flow
process reads it too): the marker file every ferry export holds, which folders an export may replace,
and the temporary folders an export is written to, named after their owner so that stale ones (a
process killed mid-export) are recognised and removed."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any

from ferry.files import process_alive

MARKER = "ferry-export.json"  # in every export: the model it holds, its spec file, ferry's version, the .keras
LISTED = 5  # names of a refused folder's files quoted in the error
SIGNATURE = "serving_default"  # the SavedModel's signature taking what the TF1 model took (tasks/export.py)
# ... and, for a TF1 graph served on serialized tf.Examples, the one taking the parsed features (the Keras model's
# inputs; what the MLflow model takes)
FEATURES_SIGNATURE = "features"


class ExportDirError(ValueError):
    """`export.dir` names something ferry must not replace."""


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a ferry export, or None (no marker, or not one ferry wrote)."""
    try:
        record = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("model"), str) else None


def write_marker(folder: Path, record: dict[str, Any]) -> None:
    """Write the marker into an export being assembled (the folder is not in place yet)."""
    (Path(folder) / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def keras_file(folder: Path) -> Path | None:
    """The `<model>.keras` of a ferry export, as its marker names it; None for any other folder."""
    record = read_marker(folder) or {}
    name = (record.get("keras") or {}).get("file")
    return Path(folder) / name if name and (Path(folder) / name).is_file() else None


def savedmodel_entries(folder: Path) -> list[Path]:
    """The SavedModel's own files and folders in an export: everything but the `.keras` and the marker."""
    others = {MARKER, getattr(keras_file(folder), "name", None)}
    return sorted(p for p in Path(folder).iterdir() if p.name not in others)


def check_replaceable(dest: Path, model: str, spec_file: Path) -> None:
    """Raise ExportDirError unless `dest` is absent, an empty folder, or a ferry export of `model`."""
    where = f"{spec_file}: export.dir: {dest}"
    if dest.is_symlink() and not dest.exists():
        raise ExportDirError(f"{where} is a dangling symbolic link; remove it or choose another export.dir")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise ExportDirError(f"{where} is a file, not a folder; ferry writes the export as a folder there only "
                             "where nothing or an empty folder is. Move the file away or choose another export.dir")
    if not any(dest.iterdir()):
        return
    record = read_marker(dest)
    if record is None:
        raise ExportDirError(f"{where} holds files that are not a ferry export ({_listing(dest)}); ferry replaces "
                             f"only an empty folder or its own export of model {model!r} (with {MARKER}). Move "
                             "them away or choose another export.dir")
    if record["model"] != model:
        raise ExportDirError(f"{where} is the ferry export of model {record['model']!r} (spec "
                             f"{record.get('spec_file')}), not of {model!r}; give each model its own export.dir")


def _listing(folder: Path) -> str:
    """A few of a folder's files (relative paths, sorted), and how many more."""
    names = sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")
                   if p.is_file() or (p.is_dir() and not any(p.iterdir())))
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def host_name() -> str:
    """This host's name as temporary folders carry it."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def temp_folder_name(dest: Path, host: str, pid: int, token: str) -> str:
    """`.<name>.tmp-<host>-<pid>-<token>`: a temporary folder of an export to `dest`, and its owner."""
    return f".{dest.name}.tmp-{host}-{pid}-{token}"


def _temp_pattern(dest: Path) -> re.Pattern[str]:
    """Parses `temp_folder_name` (from the right: a host name may hold `-`)."""
    return re.compile(re.escape(f".{dest.name}.tmp-") + r"(?P<host>[A-Za-z0-9._-]+)-(?P<pid>\d+)-[0-9a-f]{8}")


def make_temp_folder(dest: Path) -> Path:
    """A new temporary folder beside `dest`, named after this host and process; created with the
    process's umask like any folder the user makes (not mkdtemp's 0700)."""
    path = dest.with_name(temp_folder_name(dest, host_name(), os.getpid(), secrets.token_hex(4)))
    path.mkdir()
    return path


def remove_stale_temp_folders(dest: Path) -> list[Path]:
    """Remove the temporary folders of exports to `dest` left by processes of this host that are gone
    (killed mid-export); a live process's folder and other hosts' folders are kept. Returns the removed."""
    pattern, host, removed = _temp_pattern(dest), host_name(), []
    if not dest.parent.is_dir():
        return removed
    for path in sorted(dest.parent.iterdir()):
        found = pattern.fullmatch(path.name)
        if found and found["host"] == host and path.is_dir() and not process_alive(int(found["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


