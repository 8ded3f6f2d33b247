"""The one resume rule of the Table-3 runs: a step is skipped only when its manifest records that it finished with the
same inputs.

A step's inputs are its config values (the command it runs, and any value it depends on) and the fingerprints of the
files and folders it reads. A file's fingerprint is its size and sha256 (size and mtime above ``HASH_LIMIT`` bytes);
a folder's (a model, a checkpoint) the relative path, size and mtime of each file in it, so a retrained checkpoint
has a new fingerprint without hashing gigabytes. Two records per step, both JSON under ``RUNS_DIR/<row>/steps/``:

    <step>.started.json   written before the step runs: its inputs
    <step>.json           written when it finished: its inputs, wall seconds, time

``decide`` compares the current inputs with them:
    finished, same inputs, outputs present      -> skip
    started with the same inputs, not finished   -> run again (verl resumes training from its last checkpoint)
    never started                                -> run
    finished or started with other inputs        -> run again after clearing the step's old outputs, saying which
                                                    inputs changed; when the only change is files that grew at their
                                                    end (a larger held-out set) the outputs are kept (``grown``)
    OVERWRITE=1                                  -> run again after clearing, whatever the record says
Whatever depends on a rerun step reruns too: its inputs include the files that step rewrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from dft_verl.atomic import write_json_atomic

HASH_LIMIT = 256 << 20  # bytes: files larger than this are identified by size and mtime, not their sha256


def _sha256(path: Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
                if left == 0:
                    break
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict:
    """What identifies a file or folder's contents (see the module docstring); {"missing": true} when absent."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        if st.st_size > HASH_LIMIT:
            return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return {"size": st.st_size, "sha256": _sha256(p)}
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file())
        return {"files": [[str(q.relative_to(p)), q.stat().st_size, q.stat().st_mtime_ns] for q in files]}
    return {"missing": True}


def grew(old: dict, path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` is the file ``old`` identified with bytes added at its end."""
    p = Path(path)
    if "sha256" not in old or not p.is_file() or p.stat().st_size < old["size"]:
        return False
    return _sha256(p, old["size"]) == old["sha256"]


def step_inputs(config: Mapping, reads: Iterable[str | os.PathLike]) -> dict:
    """The inputs a manifest records: config values and the fingerprint of every file or folder read."""
    return {"config": json.loads(json.dumps(dict(config), sort_keys=True, default=str)),
            "files": {str(p): fingerprint(p) for p in reads}}


@dataclass(frozen=True)
class Decision:
    run: bool
    reason: str
    clear: bool = False  # delete the step's old outputs first (inputs changed, or OVERWRITE)
    grown: bool = False  # the only change: input files grown at their end (the outputs may be extended)


def changed_inputs(old: dict, new: dict) -> list[str]:
    """Names of the config values and files that differ between two input records."""
    changes = []
    oc, nc = old.get("config", {}), new.get("config", {})
    changes += [f"{k}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
    of, nf = old.get("files", {}), new.get("files", {})
    changes += [f"file {k}" for k in sorted(set(of) | set(nf)) if of.get(k) != nf.get(k)]
    return changes


def file_stem(step: str) -> str:
    """The name a step's files go by (its manifest, cost record, trainer metrics): eval/step_3 -> eval_step_3."""
    return step.replace("/", "_")


class Manifest:
    """The records of one step: ``Manifest(RUNS_DIR/<row>/steps, "train")``."""

    def __init__(self, folder: str | os.PathLike, step: str):
        name = file_stem(step)
        self.step = step
        self.done_path = Path(folder) / f"{name}.json"
        self.started_path = Path(folder) / f"{name}.started.json"

    def _read(self, path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # a record cut short is no record

    def finished(self) -> dict | None:
        return self._read(self.done_path)

    def decide(self, inputs: dict, outputs: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> Decision:
        """Whether to run the step with these inputs (module docstring); ``outputs`` must exist for a skip."""
        if overwrite:
            return Decision(True, "OVERWRITE=1", clear=True)
        done = self.finished()
        if done is not None:
            if done.get("inputs") == inputs:
                missing = [str(p) for p in outputs if not Path(p).exists()]
                if not missing:
                    return Decision(False, f"finished {done.get('finished', '')} with the same inputs")
                return Decision(True, f"outputs missing: {', '.join(missing)}", clear=True)
            return self._changed(done["inputs"], inputs)
        started = self._read(self.started_path)
        if started is None:
            return Decision(True, "not run yet")
        if started.get("inputs") == inputs:
            return Decision(True, "resuming an unfinished run with the same inputs")
        return self._changed(started.get("inputs", {}), inputs)

    @staticmethod
    def _changed(old: dict, new: dict) -> Decision:
        changes = changed_inputs(old, new)
        files_only = all(c.startswith("file ") for c in changes)
        grown = bool(changes) and files_only and all(
            grew(old["files"][c[5:]], c[5:]) for c in changes if c[5:] in old.get("files", {})) and all(
            c[5:] in old.get("files", {}) for c in changes)
        if grown:
            return Decision(True, "input grew at its end: " + ", ".join(c[5:] for c in changes), grown=True)
        return Decision(True, "inputs changed: " + ", ".join(changes[:8]) + (" ..." if len(changes) > 8 else ""),
                        clear=True)

    def start(self, inputs: dict) -> None:
        self.done_path.unlink(missing_ok=True)
        write_json_atomic({"step": self.step, "inputs": inputs, "started": _now()}, self.started_path)

    def finish(self, inputs: dict, seconds: float, **extra) -> None:
        write_json_atomic({"step": self.step, "inputs": inputs, "finished": _now(), "seconds": round(seconds, 1),
                           **extra}, self.done_path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
