"""Driver: run the configured stages in order (``stages=[prepare,sample,verify,filter]``).

Each stage skips itself when its outputs are up to date, so rerunning after a crash resumes where it stopped.
"""

from __future__ import annotations

import importlib
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


_SUMMARY_KEYS = {
    "prepare": ("n_kept", "rejected"),
    "verify": ("acceptance_rate", "pass_at_k", "reasons"),
    "filter": ("n_sft", "n_dpo_pairs"),
}


def _summary(results: dict) -> dict:
    return {stage: {k: results[stage][k] for k in keys} for stage, keys in _SUMMARY_KEYS.items() if stage in results}


def main(argv: list[str] | None = None) -> int:
    return artifacts.stage_main(run, USAGE, argv, summary=_summary)


if __name__ == "__main__":
    sys.exit(main())
