"""dft_verl.table3.check: each class of broken step command is caught and named, against the installed verl (the
seams it reads: verl's config validation, registries and reward loader; a verl bump that moves them fails here)."""

from __future__ import annotations

import pytest

from dft_verl.table3.check import CheckError, check_command, split_hydra_args

GRPO = ("verl.trainer.main_ppo", ["--config-path=pkg://dft_verl.config.online", "--config-name=grpo",
                                  "trainer.n_gpus_per_node=8"])
PPO = ("verl.trainer.main_ppo", ["--config-path=pkg://dft_verl.config.online", "--config-name=ppo",
                                 "trainer.n_gpus_per_node=8"])
SFT = ("dft_verl.trainer.sft", ["trainer.n_gpus_per_node=8"])
DPO = ("dft_verl.dpo.train", ["trainer.n_gpus_per_node=8"])


def test_split_hydra_args():
    src, name, ov = split_hydra_args("verl.trainer.main_ppo", ["--config-path", "pkg://x.y", "--config-name=grpo.yaml",
                                                               "a=1", "+b=2"])
    assert (src, name, ov) == ("pkg://x.y", "grpo", ["a=1", "+b=2"])
    assert split_hydra_args("verl.trainer.main_ppo", ["a=1"])[:2] == ("pkg://verl.trainer.config", "ppo_trainer")
    with pytest.raises(CheckError, match="--multirun"):
        split_hydra_args("verl.trainer.main_ppo", ["--multirun", "a=1,2"])


def test_row_configs_pass():
    notes = " ".join(check_command(*GRPO))
    assert "adv_estimator=grpo critic=False ref=True rollout=vllm trainer=sync n=4" in notes
    assert "reward=pkg://dft_verl.rewards:compute_score" in notes
    assert "adv_estimator=gae critic=True" in " ".join(check_command(*PPO))
    assert "loss.type=dft" in " ".join(check_command(*SFT))
    assert "dpo.beta=0.1" in " ".join(check_command(*DPO))


def _plus(cmd, *args):
    return cmd[0], [*cmd[1], *args]


@pytest.mark.parametrize("cmd, message", [
    (_plus(SFT, "optim.lrr=1e-5"), "unknown key 'optim.lrr'"),
    (_plus(SFT, "loss.type=dftt"), "loss.type='dftt' is not supported"),
    (_plus(SFT, "optim.lr_scheduler_type=linear"), "rejects the composed config (optim)"),
    (_plus(GRPO, "actor_rollout_ref.actor.optim.lrr=1e-6"), "unknown key 'actor_rollout_ref.actor.optim.lrr'"),
    (_plus(GRPO, "algorithm.adv_estimator=grpoo"), "not a verl advantage estimator"),
    (_plus(GRPO, "actor_rollout_ref.rollout.name=vllmm"), "not a verl rollout"),
    (_plus(GRPO, "trainer.n_gpus_per_node=3"), "must be divisible"),  # 256 prompts x 4 samples over 3 GPUs
    (_plus(GRPO, "reward.custom_reward_function.name=score"), "does not load"),
    (_plus(PPO, "critic.ppo_mini_batch_size=512"), "critic.ppo_mini_batch_size"),
    (_plus(DPO, "dpo.beta=0"), "dpo.beta must be > 0"),
    (_plus(DPO, "data.train_batch_size=100"), "multiple of the 8 data-parallel ranks"),
    (("dft_verl.eval", ["--model", "m", "--out", "o", "--k", "four"]), "invalid int value"),
    (("dft_verl.eval", ["--model", "m"]), "--out"),
    (("dft_verl.nope", []), "not found"),
    (("dft_verl.pipeline", ["out_dir=/d", "prepare.source=x"]), "sample.model_path"),
    (("dft_verl.pipeline", ["out_dir=/d", "prepare.source=x", "sample.model_path=m",
                            "prepare.prompt_template=qwen_boxed"]), "unknown prompt template 'qwen_boxed'"),
])
def test_broken_commands_are_named(cmd, message):
    with pytest.raises(CheckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_command(*cmd)
