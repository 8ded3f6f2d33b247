"""verl-facing halves of the hf rollout backend: the replica (driver side) and the adapter (trainer side).

- ``HFReplica`` (``RolloutReplicaRegistry["hf"]``): verl's ``LLMServerManager`` makes one replica per
  ``tensor_model_parallel_size * data_parallel_size * pipeline_model_parallel_size`` trainer ranks, as
  for vLLM; each replica launches one ``HFRolloutServer`` actor on the node of its first rank.
- ``HFServerAdapter`` (``_ROLLOUT_REGISTRY[("hf", "async")]``): built inside every trainer rank; after
  each step verl hands it the FSDP actor's weights as a generator of (HF name, full tensor). Every
  rank drains the generator (gathering a sharded tensor is a collective); the replica's first rank
  ships the tensors to its server in buckets of ``checkpoint_engine.update_weights_bucket_megabytes``.

Supported: hybrid mode (trainer and rollout share the workers, verl's sync trainers), text-only
models, full weights (LoRA only with ``model.lora.merge=True``). Anything else fails at start-up.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from dft_verl.rollout.server import HFRolloutServer

logger = logging.getLogger(__name__)

# Environment a server actor inherits from the driver (it is no verl worker: Ray's runtime_env does not
# reach it through verl's worker setup, so the platform and offline settings are passed explicitly).
_SERVER_ENV = ("VERL_PLATFORM", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS")


def server_name(replica_rank: int, name_suffix: str = "") -> str:
    """Ray actor name of a replica's server (the adapter finds its server by this name)."""
    return f"hf_server_{replica_rank}{name_suffix}"


class HFReplica(RolloutReplica):
    """One ``HFRolloutServer`` per replica, placed on the node of the replica's first trainer rank."""

    async def init_hybrid_colocated(self, worker_group, resource_pool):
        raise NotImplementedError(self._only_hybrid())

    async def init_colocated(self, resource_pool):
        raise NotImplementedError(self._only_hybrid())

    async def init_standalone(self):
        raise NotImplementedError(self._only_hybrid())

    @staticmethod
    def _only_hybrid() -> str:
        return ("the hf rollout backend runs in hybrid mode only (trainer and rollout on the same workers: "
                "trainer.v1.trainer_mode=cpu_sync or sync, actor_rollout_ref.hybrid_engine=True)")

    async def launch_servers(self):
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        name = server_name(self.replica_rank, self.name_suffix)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                num_cpus=0,  # shares the trainer ranks' CPUs: rollout and training alternate
                max_concurrency=self.max_concurrency,
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                runtime_env={"env_vars": {k: os.environ[k] for k in _SERVER_ENV if k in os.environ}},
            )
            .remote(self.config, self.model_config, self.replica_rank)
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"ray://{name}"  # token-in/token-out through the actor handle; no HTTP server


class HFServerAdapter(BaseRollout):
    """Trainer-side handle of the rank's replica server: lifecycle calls and weight sync."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, **kwargs):
        super().__init__(config, model_config, device_mesh)
        ranks_per_replica = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                             * self.config.pipeline_model_parallel_size)
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank = rank // ranks_per_replica if replica_rank == -1 else replica_rank
        self.is_leader = rank % ranks_per_replica == 0
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        self._server: Optional[Any] = None

    def _handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]):
        if self.is_leader:
            await self._handle().wake_up.remote(tags=tags)

    async def release(self):
        if self.is_leader:
            await self._handle().sleep.remote()

    @torch.no_grad()
    async def update_weights(self, weights, wire_format: str = "named_tensors", global_steps: Optional[int] = None,
                             peft_config=None, **kwargs):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the hf rollout backend takes full named tensors, not wire_format={wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError("the hf rollout backend syncs merged weights only: set model.lora.merge=True")
        if not self.is_leader:
            for _ in weights:  # gathering each full tensor is a collective: take part, keep nothing
                pass
            return
        server = self._handle()
        await server.begin_weight_update.remote()
        bucket: dict[str, torch.Tensor] = {}
        size = 0
        try:
            for name, tensor in weights:
                bucket[name] = tensor.detach().cpu()  # a gathered full tensor (FSDP) or the parameter itself
                size += tensor.numel() * tensor.element_size()
                if size >= self.bucket_bytes:
                    await server.load_weights.remote(bucket)
                    bucket, size = {}, 0
            if bucket:
                await server.load_weights.remote(bucket)
        finally:
            await server.finish_weight_update.remote(global_steps)
