"""Where ferry keeps its local state: the project root, work folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `pyproject.toml` or `.git`, else `start`'s folder."""
    start = Path(start).resolve()
    folder = start if start.is_dir() else start.parent
    for candidate in [folder, *folder.parents]:
        if (candidate / "pyproject.toml").exists() or (candidate / ".git").exists():
            return candidate
    return folder


def work_dir(catalogue: Path, model: str, fresh: bool = False) -> Path:
    """The folder where one model's stages hand each other files (inventory, weights, reports) and keep
    their cached results (`results/`); `fresh` empties it first (nothing cached survives)."""
    path = project_root(catalogue) / ".ferry" / "work" / model
    if fresh and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
