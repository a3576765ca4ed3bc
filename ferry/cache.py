"""Cache keys of the stages: the spec sections, input-file fingerprints and upstream results a stage's
result depends on, plus ferry's own build, hashed. Same key, same result: a rerun skips the stage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import ferry
from ferry.files import write_atomically

_CHUNK = 1 << 20
_MEMO: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _file_digest(path: Path, memo_dir: Path | None) -> str:
    """sha256 of a file, remembered by (path, size, mtime, inode) in memory and under `memo_dir`."""
    key = _stat_key(path)
    if key in _MEMO:
        return _MEMO[key]
    memo = memo_dir / hashlib.sha1(repr(key).encode()).hexdigest() if memo_dir else None
    if memo is not None and memo.exists():
        _MEMO[key] = memo.read_text()
        return _MEMO[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    _MEMO[key] = digest.hexdigest()
    if memo is not None:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(memo, _MEMO[key])
    return _MEMO[key]


def fingerprint(path: Path, memo_dir: Path | None = None) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and bytes; `missing` if absent."""
    path = Path(path)
    if path.is_file():
        return _file_digest(path, memo_dir)
    if not path.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{_file_digest(file, memo_dir)}\n".encode())
    return digest.hexdigest()


@lru_cache(maxsize=1)
def build_id() -> str:
    """ferry's version plus a digest of its own code (every module under ferry/ and tasks/): new code, new keys."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("ferry", "tasks"):
        for file in sorted((root / folder).rglob("*.py")):  # every module, in subpackages too
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return f"{ferry.__version__}+{digest.hexdigest()[:12]}"


def stage_key(model: str, stage: str, sections: dict[str, Any], files: Iterable[Path],
              upstream: Iterable[Any] = (), memo_dir: Path | None = None) -> str:
    """The cache key of one stage of one model (a hex digest, prefixed for people reading the store)."""
    payload = {
        "ferry": build_id(),
        "sections": sections,
        "files": {str(f): fingerprint(f, memo_dir) for f in files},
        "upstream": list(upstream),
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return f"{model}-{stage}-{digest[:32]}"
