"""A CPU rollout backend for verl's server-mode rollout: a transformers model behind verl's API.

Select it with ``actor_rollout_ref.rollout.name=hf`` (the CPU settings, ``+platform=cpu`` on the
online configs, do). verl's vLLM backend needs CUDA; this one runs the same agent loop, reward and
weight-sync path with a plain transformers model, so GRPO/PPO run end to end on a laptop or in CI.

    sampler.py   a batched decoding loop with vLLM's request semantics and the actor's log-probs
    server.py    the Ray actor verl's agent loop talks to (micro-batching, weight loading, lifecycle)
    replica.py   the replica verl's LLMServerManager launches and the adapter inside each trainer rank

``register()`` (called by the ``verl.plugins`` hook in every verl process) puts the backend into
verl's two rollout registries.
"""

import hashlib

ROLLOUT_NAME = "hf"


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process and run (Python's ``hash`` of a str is not): the first 8
    bytes of its sha256, little-endian, in [0, 2**64). The request seeds (server.py) and replica choice (router.py)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _load_replica():
    from dft_verl.rollout.replica import HFReplica

    return HFReplica


def register() -> None:
    """Register the backend under ``ROLLOUT_NAME`` with verl (cheap: nothing heavy is imported).

    ``RolloutReplicaRegistry.register`` is verl's public hook for replicas. The trainer-side adapter has
    no register function in verl 0.9.1: ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` is a plain dict
    of (name, mode) -> class path, read by ``get_rollout_class``; tests/test_rollout_plugin.py fails if
    either seam moves.
    """
    from verl.workers.rollout import base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "dft_verl.rollout.replica.HFServerAdapter"
