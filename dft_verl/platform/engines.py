"""verl's FSDP engines, adjusted where they assume an accelerator; registered for device "cpu".

Two assumptions of verl 0.9.1's ``verl/workers/engine/fsdp/transformer_impl.py`` fail without one:
- a forward-only engine (the reference policy) is always wrapped with
  ``CPUOffloadPolicy(pin_memory=True)``; pinning host memory needs an accelerator. On CPU the
  parameters already live in host memory, so the reference is built like any other engine.
- the value model (PPO's critic) is loaded by ``verl.utils.model.load_valuehead_model`` with
  ``attn_implementation="flash_attention_2"`` hard-coded. The CPU engine loads the same
  ``AutoModelForTokenClassification(num_labels=1)`` through the language-model branch, which
  honours ``model.override_config.attn_implementation`` (sdpa on CPU).

Both are subclasses overriding one build method each; tests/test_rl_cpu.py runs them in a real
PPO step, so a verl change to these methods fails there.
"""

from __future__ import annotations

from contextlib import contextmanager

from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead


@contextmanager
def _field(obj, name: str, value):
    """Temporarily set a field of one of verl's frozen config dataclasses."""
    old = getattr(obj, name)
    object.__setattr__(obj, name, value)
    try:
        yield
    finally:
        object.__setattr__(obj, name, old)


class _NoPinnedOffload:
    """A forward-only (reference) engine is built without verl's pinned-memory offload policy."""

    def _build_fsdp_module(self, module):
        if not self.engine_config.forward_only:
            return super()._build_fsdp_module(module)
        with _field(self.engine_config, "forward_only", False):
            return super()._build_fsdp_module(module)


class CPUFSDPEngineWithLMHead(_NoPinnedOffload, FSDPEngineWithLMHead):
    """verl's language-model engine (actor and reference) for device "cpu"."""


class CPUFSDPEngineWithValueHead(_NoPinnedOffload, FSDPEngineWithValueHead):
    """verl's value-model engine; the token-classification model is loaded with the configured attention."""

    def _build_module(self):
        hf_config = self.model_config.hf_config
        # What verl's value branch sets before loading (transformer_impl.py, load_valuehead_model):
        hf_config.num_labels = 1
        hf_config.classifier_dropout = 0.0
        hf_config.hidden_dropout = "0"
        hf_config.summary_dropout_prob = 0.0
        arch = hf_config.architectures[0]
        if "ForTokenClassification" not in arch:
            hf_config.architectures = [arch.replace("ForCausalLM", "ForTokenClassification")]
        with _field(self.model_config, "model_type", "language_model"):
            return super()._build_module()
