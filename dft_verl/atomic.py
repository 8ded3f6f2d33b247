"""The one atomic-write helper: a file is written to ``<name>.tmp-<pid>`` in its own folder and moved into place with
``os.replace``, so a killed writer leaves the old file or the new one (and at most a stray tmp file no reader looks
at), never a half-written one."""

from __future__ import annotations

import json
import os
from pathlib import Path


def tmp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a tmp file next to ``path``, then os.replace it onto ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(obj, path: str | os.PathLike) -> Path:
    """JSON (indented, sorted keys; objects JSON does not know as their str) written atomically."""
    return write_text_atomic(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n", path)


def write_parquet_atomic(df, path: str | os.PathLike) -> Path:
    """A pandas DataFrame (no index) written atomically."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
