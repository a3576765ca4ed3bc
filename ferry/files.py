"""Files: the project root, atomic writes (one way, for every file and folder ferry writes), processes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path


def project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `pyproject.toml` or `.git`, else `start`'s folder."""
    start = Path(start).resolve()
    folder = start if start.is_dir() else start.parent
    for candidate in [folder, *folder.parents]:
        if (candidate / "pyproject.toml").exists() or (candidate / ".git").exists():
            return candidate
    return folder


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A name beside `path` that no other process or thread uses: `.<name>.<pid>-<random><suffix>`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def write_atomically(path: Path, content: str | bytes | Callable[[Path], object], suffix: str = ".tmp") -> None:
    """Write `path` through a temporary sibling and a rename: never half-written, never torn by another
    writer. `content` is text, bytes, or a function writing the file it is given (`np.savez`, Keras'
    `save_weights`, `savefig`; `suffix` ends the temporary name as such writers insist, e.g. `.tmp.npz`)."""
    path = Path(path)
    tmp = temporary_sibling(path, suffix)
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_folder(new: Path, dest: Path) -> None:
    """Put the complete folder `new` at `dest` with renames only (the old `dest` moved aside, then
    removed): `dest` is never half-written."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    if old.exists():
        shutil.rmtree(old)


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


