"""Where ferry keeps its local state: the project root, work folders."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator


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


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A name beside `path` that no other process or thread uses: `.<name>.<pid>-<random><suffix>`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: never half-written."""
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK_FILE = ".lock"


@contextlib.contextmanager
def model_lock(work: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold a model's work folder for one run at a time (two runs of one catalogue at once wait for each
    other model by model instead of writing the same files). The lock dies with its process; once held,
    temporary files a killed run left in the folder are removed."""
    path = Path(work) / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            say(f"{Path(work).name}: waiting for another run of this model ({handle.read().strip() or 'unknown'})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        for leftover in Path(work).glob(".*.tmp*"):  # a killed run's half-written files
            (shutil.rmtree if leftover.is_dir() else os.remove)(leftover)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
