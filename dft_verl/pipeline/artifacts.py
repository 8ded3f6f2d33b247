"""Files the pipeline stages write: atomic parquet/json (dft_verl.atomic), stage manifests (resume), and the hydra config.

Atomic: every file is written to ``<name>.tmp-<pid>`` in the same folder and moved into place with
``os.replace``, so a killed stage leaves either the old file, the new one, or a stray tmp file that no reader
looks at. Resume: a stage folder holds ``_manifest.json`` = {stage, fingerprint, outputs}; the fingerprint is
a sha256 over the stage's result-determining config and the bytes of its input. A rerun with the same
fingerprint skips the stage; a different one reruns it in an emptied folder, saying why (no mixing of runs);
``overwrite=true`` reruns it whatever the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

# the stages write through these (dft_verl.atomic is the one atomic-write helper)
from dft_verl.atomic import write_json_atomic, write_parquet_atomic  # noqa: F401

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config" / "pipeline"
MANIFEST = "_manifest.json"


def shard_paths(shard_dir: str | os.PathLike, n_items: int, shard_size: int) -> tuple[list[Path], list[int]]:
    """Shard files for ``n_items`` rows in shards of ``shard_size`` under ``shard_dir`` (created, stale tmp files
    removed); returns (every shard's path, indices of the shards not written yet)."""
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(shard_dir)
    n_shards = (n_items + shard_size - 1) // shard_size
    paths = [shard_dir / f"shard-{s:05d}.parquet" for s in range(n_shards)]
    return paths, [s for s in range(n_shards) if not paths[s].exists()]


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete tmp files a killed writer left in ``folder``; returns how many."""
    folder = Path(folder)
    stale = [p for p in folder.glob("*.tmp-*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


# --------------------------------------------------------------------------------------------------------
# Fingerprints and manifests
# --------------------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(stage_config: Mapping, inputs: Iterable[str | os.PathLike] = ()) -> str:
    """sha256 over the JSON of ``stage_config`` (sorted keys) and the sha256 of each input file's bytes."""
    h = hashlib.sha256(json.dumps(stage_config, sort_keys=True, default=str).encode())
    for p in inputs:
        h.update(file_digest(p).encode())
    return h.hexdigest()


class StageState:
    """Resume bookkeeping for one stage folder."""

    def __init__(self, stage: str, folder: str | os.PathLike, fp: str, overwrite: bool = False):
        self.stage, self.folder, self.fp = stage, Path(folder), fp
        self.manifest_path = self.folder / MANIFEST
        self.started_path = self.folder / "_started.json"
        self._claim(overwrite)

    def _claim(self, overwrite: bool) -> None:
        """The one resume rule (as dft_verl.table3's): a folder holding results of another config or input (different
        fingerprint) is emptied and the stage reruns, saying why; overwrite reruns it whatever the fingerprint."""
        recorded = None
        for p in (self.manifest_path, self.started_path):
            if p.exists():
                recorded = json.loads(p.read_text())["fingerprint"]
                break
        if recorded is not None and (recorded != self.fp or overwrite):
            why = "overwrite=true" if recorded == self.fp else \
                f"config or input changed (fingerprint {recorded[:12]} -> {self.fp[:12]})"
            logging.getLogger("dft_verl.pipeline").info("%s: %s: replacing %s", self.stage, why, self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.folder)
        if not self.started_path.exists():
            write_json_atomic({"stage": self.stage, "fingerprint": self.fp}, self.started_path)

    def done(self) -> bool:
        """True when this stage already finished with the same fingerprint and all its outputs exist."""
        if not self.manifest_path.exists():
            return False
        m = json.loads(self.manifest_path.read_text())
        return m.get("fingerprint") == self.fp and all((self.folder / o).exists() for o in m.get("outputs", []))

    def finish(self, outputs: Iterable[str], **extra) -> None:
        write_json_atomic({"stage": self.stage, "fingerprint": self.fp, "outputs": sorted(outputs), **extra},
                          self.manifest_path)


# --------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------


def load_config(overrides: Iterable[str] = (), config_name: str = "pipeline"):
    """Compose ``dft_verl/config/pipeline/<config_name>.yaml`` with hydra command-line style overrides."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def to_plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)


def require(cfg, *keys: str) -> None:
    """Raise naming every mandatory key (``???`` in the yaml) the user has not set."""
    from omegaconf import OmegaConf

    missing = []
    for k in keys:
        node, _, leaf = k.rpartition(".")
        parent = OmegaConf.select(cfg, node) if node else cfg
        if parent is None or OmegaConf.is_missing(parent, leaf) or OmegaConf.select(cfg, k) in (None, ""):
            missing.append(k)
    if missing:
        raise ValueError(f"missing required config value(s): {', '.join(missing)} (set them as key=value)")


def cli_overrides(argv: list[str] | None, usage: str) -> list[str] | None:
    """Hydra-style overrides from argv; prints ``usage`` and returns None for -h/--help."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage)
        print(f"config: {CONFIG_DIR / 'pipeline.yaml'}")
        print((CONFIG_DIR / "pipeline.yaml").read_text())
        return None
    bad = [a for a in args if "=" not in a]
    if bad:
        raise SystemExit(f"arguments must be hydra overrides key=value, got {bad}\n{usage}")
    return args


def stage_main(run, usage: str, argv: list[str] | None = None, summary=None) -> int:
    """The CLI of every stage and of the driver: parse ``key=value`` overrides, run, print a JSON summary."""
    overrides = cli_overrides(argv, usage)
    if overrides is None:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stats = run(load_config(overrides))
    print(json.dumps(summary(stats) if summary else stats))
    return 0
