"""Routing of rollout requests to replicas by their prompt: verl's router plugin for the CPU platform.

Under ``rollout.full_determinism`` verl 0.9.1's own router sends a request to ``hash(request id) % replicas``, and its
cpu_sync agent loop names every request ``det-0``: one replica then serves the whole rollout while the others wait
(measured on the demo's GRPO row: 44-54 ms per generated token against 18-26 with two replicas). This router sends
a request to replica ``sha256(prompt token ids) % replicas`` instead: the same replica for the same question in
every run (each question's n samples meet on one server, whose per-prompt sample counter the seeds rely on:
``dft_verl.rollout.server``), different questions spread over the replicas.

verl loads it from ``actor_rollout_ref.rollout.router_config_path``, a YAML naming ``router_class``
(``dft_verl/config/rollout_router.yaml``, which the CPU platform names through the ``dft_verl_config`` resolver), and
constructs it as ``cls(servers, yaml_config)``. It subclasses verl's ``GlobalRequestLoadBalancer`` (add/remove
servers, in-flight counts) and replaces only the choice of replica; tests/test_rollout_server.py covers the seam.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from verl.workers.rollout.router import GlobalRequestLoadBalancer

from dft_verl.rollout import stable_hash


def prompt_slot(prompt_ids: Sequence[int], n: int) -> int:
    """The replica index, in [0, n), of a prompt: its token ids' sha256 modulo n."""
    return stable_hash(",".join(str(int(t)) for t in prompt_ids)) % n


class PromptHashRouter(GlobalRequestLoadBalancer):
    """verl's load balancer, a request placed by its prompt (``prompt_slot``) over the replicas in launch order."""

    def __init__(self, servers: dict[str, Any], config: Optional[dict] = None):
        super().__init__(servers)  # config: verl passes the router YAML; nothing in it beyond router_class

    def require_acquire_fields(self) -> list[str]:
        return ["prompt_ids"]

    def acquire_server(self, request_id: str, prompt_ids: Optional[Sequence[int]] = None, **extra):
        if not self._servers:
            raise RuntimeError("No available servers in load balancer")
        if prompt_ids is None:
            raise ValueError(f"request {request_id!r}: {type(self).__name__} routes by prompt_ids, none were given")
        server_id = list(self._servers)[prompt_slot(prompt_ids, len(self._servers))]
        self._inflight_requests[server_id] = self._inflight_requests.get(server_id, 0) + 1
        return server_id, self._servers[server_id]
