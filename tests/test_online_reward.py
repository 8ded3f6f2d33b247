"""GRPO/PPO reward wiring: verl's own reward code path, configured by our grpo.yaml, scores with rewards.py.

verl 0.9.1 scores a rollout in ``RewardLoopWorker.compute_score`` (a Ray actor in training; built directly
here), which loads ``reward.custom_reward_function`` with ``verl.trainer.ppo.reward.load_reward_manager``
and hands the decoded response to it through the "naive" reward manager. The responses below are tokenised,
padded and masked the way the agent loop delivers them, so padding, decoding and the config keys are all
exercised; the expected scores are worked out by hand from the judging rule (last \\boxed{} vs gold).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# (response, gold, expected reward)
CASES = [
    ("12 + 30 = 42, so the answer is \\boxed{42}.", "42", 1.0),
    ("Half of it: \\boxed{\\frac{1}{2}}", "0.5", 1.0),  # math-verify equivalence, not string match
    ("Natalia sold 48 + 24 = 72 clips. \\boxed{72}", "She sold 48/2 = 24 in May.\n#### 72", 1.0),  # GSM8K gold
    ("12 + 30 = 41, so the answer is \\boxed{41}.", "42", 0.0),
    ("The answer is 42.", "42", 0.0),  # no boxed answer
    ("First \\boxed{42}, no wait, \\boxed{43}.", "42", 0.0),  # the last box counts
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from dft_verl.tiny import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def grpo_config(tokenizer_dir):
    """The config run_grpo.sh trains with, composed from dft_verl/config/online/grpo.yaml."""
    from dft_verl.table3.check import compose_config

    return compose_config("pkg://dft_verl.config.online", "grpo", [f"actor_rollout_ref.model.path={tokenizer_dir}"])


def rollout_batch(tokenizer, responses, golds, prompt="What is 12 + 30?", pad_to=48):
    """DataProto shaped like the agent loop's: left-padded prompts, right-padded responses, one mask."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    prompts, resps, masks = [], [], []
    for text in responses:
        r_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert len(r_ids) <= pad_to, "raise pad_to"
        prompts.append(p_ids)
        resps.append(r_ids + [pad] * (pad_to - len(r_ids)))
        masks.append([1] * len(p_ids) + [1] * len(r_ids) + [0] * (pad_to - len(r_ids)))
    batch = {
        "prompts": torch.tensor(prompts),
        "responses": torch.tensor(resps),
        "attention_mask": torch.tensor(masks),
    }
    non_tensor = {
        "data_source": np.array(["numina_math"] * len(responses), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": g} for g in golds], dtype=object),
        "extra_info": np.array([{"split": "train", "index": i} for i in range(len(responses))], dtype=object),
        "tool_extra_fields": np.array([{} for _ in responses], dtype=object),
    }
    return DataProto.from_dict(tensors=batch, non_tensors=non_tensor)


def test_grpo_config_points_at_our_reward(grpo_config):
    fn_cfg = grpo_config.reward.custom_reward_function
    assert (fn_cfg.path, fn_cfg.name) == ("pkg://dft_verl.rewards", "compute_score")
    assert grpo_config.algorithm.adv_estimator == "grpo"
    assert grpo_config.actor_rollout_ref.rollout.n == 4
    assert grpo_config.actor_rollout_ref.rollout.temperature == 1.0


def test_verl_loader_returns_our_function(grpo_config):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    import dft_verl.rewards as rewards

    fn = get_custom_reward_fn(grpo_config)
    assert fn.args[0] is rewards.compute_score  # partial(_call_with_kwargs, raw_fn, reward_kwargs)
    assert fn(data_source="x", solution_str="so \\boxed{7}", ground_truth="7", extra_info={}) == 1.0


def test_reward_loop_worker_scores_hand_made_responses(grpo_config):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    worker = RewardLoopWorker(grpo_config)
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    data = rollout_batch(worker.input_tokenizer, [c[0] for c in CASES], [c[1] for c in CASES])

    # The agent loop's path: one single-sample DataProto per rollout.
    single = [worker.loop.run_until_complete(worker.compute_score(data[i : i + 1])) for i in range(len(CASES))]
    assert [r["reward_score"] for r in single] == [c[2] for c in CASES]
    assert [r["reward_extra_info"]["acc"] for r in single] == [c[2] for c in CASES]

    # The batch path (RewardLoopManager) gives the same scores, placed on each response's last real token.
    batch = worker.loop.run_until_complete(worker.compute_score_batch(data))
    scores = [r["reward_score"] for r in batch]
    assert scores == [c[2] for c in CASES]
    rm = NaiveRewardManager.assemble_rm_scores(data, scores)
    lengths = data.batch["attention_mask"][:, data.batch["prompts"].shape[1] :].sum(-1)
    for i, n in enumerate(lengths.tolist()):
        assert rm[i, n - 1].item() == scores[i]
        assert rm[i].abs().sum().item() == scores[i]  # nothing anywhere else


def test_grpo_advantages_from_our_rewards():
    """verl's GRPO estimator on rewards of a group of 4: A_i = (r_i - mean) / (std + eps), std unbiased."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # two prompts x n=4
    index = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    mask = torch.ones(8, 5)
    token_rewards = torch.zeros(8, 5)
    token_rewards[:, -1] = rewards
    adv, _ = compute_grpo_outcome_advantage(token_rewards, mask, index)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)  # mean 0.5, unbiased std sqrt(4 * 0.25 / 3)
    assert torch.allclose(adv[:4, 0], torch.tensor([a, -a, -a, a]), atol=1e-5)
    assert torch.all(adv[4:] == 0)  # all-correct group: no signal
    assert torch.all(adv == adv[:, :1])  # outcome advantage broadcast over the response tokens
