"""Driver: run the configured stages in order (``stages=[prepare,sample,verify,filter]``).

Each stage skips itself when its outputs are up to date, so rerunning after a crash resumes where it stopped.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys

from dft_verl.pipeline import STAGES, artifacts

USAGE = ("usage: python -m dft_verl.pipeline out_dir=DIR prepare.source=DATA sample.model_path=MODEL "
         "[stages=[verify,filter]] [key=value ...]")


def run(cfg) -> dict:
    """Run ``cfg.stages`` in pipeline order; returns {stage: stats}."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; supported: {list(STAGES)}")
    results = {}
    for stage in STAGES:
        if stage in cfg.stages:
            logging.getLogger(__name__).info("=== %s ===", stage)
            results[stage] = importlib.import_module(f"dft_verl.pipeline.{stage}").run(cfg)
    return results


def main(argv: list[str] | None = None) -> int:
    overrides = artifacts.cli_overrides(argv, USAGE)
    if overrides is None:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run(artifacts.load_config(overrides))
    summary = {
        "prepare": {k: results["prepare"][k] for k in ("n_kept", "rejected")} if "prepare" in results else None,
        "verify": {k: results["verify"][k] for k in ("acceptance_rate", "pass_at_k", "reasons")}
        if "verify" in results else None,
        "filter": {k: results["filter"][k] for k in ("n_sft", "n_dpo_pairs")} if "filter" in results else None,
    }
    print(json.dumps({k: v for k, v in summary.items() if v is not None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
