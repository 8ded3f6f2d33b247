"""dft_verl.recipe_check: launcher parsing, and that each class of broken recipe command is caught and named."""

from __future__ import annotations

import pytest

from dft_verl.recipe_check import RecipeCheckError, check_command, main, parse_command, split_hydra_args

GRPO = ["python3", "-m", "verl.trainer.main_ppo", "--config-path=pkg://dft_verl.config.online", "--config-name=grpo",
        "trainer.n_gpus_per_node=8"]
PPO = [*GRPO[:4], "--config-name=ppo", "trainer.n_gpus_per_node=8"]
SFT = ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=8", "-m", "dft_verl.trainer.sft",
       "trainer.n_gpus_per_node=8"]
DPO = [*SFT[:5], "dft_verl.dpo.train", "trainer.n_gpus_per_node=8"]


def test_parse_launchers():
    cmd = ["env", "A=1", "ray", "job", "submit", "--address=http://h:8265", "--working-dir=/r", "--",
           "torchrun", "--nnodes", "2", "--node_rank", "1", "--master_addr", "h", "-m", "dft_verl.dpo.train", "a=1"]
    launch = parse_command(cmd)
    assert (launch.module, launch.args, launch.launcher) == ("dft_verl.dpo.train", ["a=1"], "ray-job")
    launch = parse_command(["/usr/bin/python3.11", "-u", "-m", "verl.trainer.main_ppo", "x=1"])
    assert (launch.module, launch.args, launch.launcher) == ("verl.trainer.main_ppo", ["x=1"], "python")
    for bad, why in ((["python", "train.py"], "not `python -m"), (["bash", "x.sh"], "unknown launcher"),
                     (["ray", "job", "submit", "python", "-m", "x"], "without `--`"),
                     (["torchrun", "--standalone", "train.py"], "without `-m")):
        with pytest.raises(RecipeCheckError, match=why):
            parse_command(bad)


def test_split_hydra_args():
    src, name, ov = split_hydra_args("verl.trainer.main_ppo", ["--config-path", "pkg://x.y", "--config-name=grpo.yaml",
                                                               "a=1", "+b=2"])
    assert (src, name, ov) == ("pkg://x.y", "grpo", ["a=1", "+b=2"])
    assert split_hydra_args("verl.trainer.main_ppo", ["a=1"])[:2] == ("pkg://verl.trainer.config", "ppo_trainer")
    with pytest.raises(RecipeCheckError, match="--multirun"):
        split_hydra_args("verl.trainer.main_ppo", ["--multirun", "a=1,2"])


def test_recipe_configs_pass():
    notes = " ".join(check_command(GRPO))
    assert "adv_estimator=grpo critic=False ref=True rollout=vllm trainer=sync n=4" in notes
    assert "reward=pkg://dft_verl.rewards:compute_score" in notes
    assert "adv_estimator=gae critic=True" in " ".join(check_command(PPO))
    assert "loss.type=dft" in " ".join(check_command(SFT))
    assert "dpo.beta=0.1" in " ".join(check_command(DPO))


@pytest.mark.parametrize("cmd, message", [
    (SFT + ["optim.lrr=1e-5"], "unknown key 'optim.lrr'"),
    (SFT + ["loss.type=dftt"], "loss.type='dftt' is not supported"),
    (SFT + ["optim.lr_scheduler_type=linear"], "rejects the composed config (optim)"),
    (GRPO + ["actor_rollout_ref.actor.optim.lrr=1e-6"], "unknown key 'actor_rollout_ref.actor.optim.lrr'"),
    (GRPO + ["algorithm.adv_estimator=grpoo"], "not a verl advantage estimator"),
    (GRPO + ["actor_rollout_ref.rollout.name=vllmm"], "not a verl rollout"),
    (GRPO + ["trainer.n_gpus_per_node=3"], "must be divisible"),  # 256 prompts x 4 samples over 3 GPUs
    (GRPO + ["reward.custom_reward_function.name=score"], "does not load"),
    (PPO + ["critic.ppo_mini_batch_size=512"], "critic.ppo_mini_batch_size"),
    (DPO + ["dpo.beta=0"], "dpo.beta must be > 0"),
    (DPO + ["data.train_batch_size=100"], "multiple of the 8 data-parallel ranks"),
    (["python", "-m", "dft_verl.eval", "--model", "m", "--out", "o", "--k", "four"], "invalid int value"),
    (["python", "-m", "dft_verl.eval", "--model", "m"], "--out"),
    (["python", "-m", "dft_verl.nope"], "not found"),
    (["python", "-m", "dft_verl.pipeline", "out_dir=/d", "prepare.source=x"], "sample.model_path"),
])
def test_broken_commands_are_named(cmd, message):
    with pytest.raises(RecipeCheckError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_command(cmd)


def test_queue_reports_each_failure(tmp_path, capsys):
    import shlex

    queue = tmp_path / "queue.txt"
    queue.write_text(shlex.join(SFT) + "\n\n" + shlex.join(SFT + ["optim.lrr=1"]) + "\n")
    assert main(["--queue", str(queue)]) == 1
    out, err = capsys.readouterr()
    assert "recipe_check: 1 ok, 1 failed" in out
    assert "optim.lrr" in err and "recipe_check FAIL" in err
    assert main(["--", *SFT]) == 0
