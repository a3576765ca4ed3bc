"""When MLflow cannot be reached, nothing is lost: a run's records go to a journal on disk instead
(`.ferry/relog/<id>/`: `ops.jsonl` plus copies of the artifacts), and `ferry relog <id>` replays them
into a tracking store later, creating the runs that could not be created.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

OFFLINE_PREFIX = "offline-"
_LOCK = threading.Lock()


def offline_id() -> str:
    """A run id for a run that exists only in a journal (until relogged)."""
    return f"{OFFLINE_PREFIX}{uuid.uuid4().hex}"


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow error means the tracking store could not be reached (not a bad request)."""
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return True
    text = str(exc)
    return any(s in text for s in ("API request to", "Max retries exceeded", "Connection refused",
                                   "unable to open database file"))


class Journal:
    """The records of one catalogue run that did not reach MLflow, in order."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def id(self) -> str:
        return self.folder.name

    def exists(self) -> bool:
        return (self.folder / "ops.jsonl").exists()

    def record(self, op: str, **payload: Any) -> None:
        """Append one operation; files named by `artifact` ops are copied in first."""
        if op == "artifact":
            source = Path(payload["path"])
            copy = self.folder / "files" / uuid.uuid4().hex / source.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
            payload = {**payload, "path": str(copy.relative_to(self.folder))}
        line = json.dumps({"op": op, **payload}, default=str) + "\n"
        with _LOCK:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / "ops.jsonl", "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def ops(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.folder / "ops.jsonl").read_text().splitlines() if line.strip()]

    def replay(self, apply: Callable[[dict[str, Any], dict[str, str]], str | None]) -> dict[str, str]:
        """Call `apply(op, ids)` for every op in order (`ids`: offline id -> new run id, filled from what
        `create_run` ops return); mark the journal replayed. Returns `ids`."""
        ids: dict[str, str] = {}
        for op in self.ops():
            if op.get("op") == "artifact":
                op["path"] = str(self.folder / op["path"])
            new_id = apply(op, ids)
            if op["op"] == "create_run":
                ids[op["run"]] = new_id
        (self.folder / "replayed.json").write_text(json.dumps(ids, indent=1))
        return ids
