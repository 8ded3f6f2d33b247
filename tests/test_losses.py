"""The loss family against hand-worked values, autograd, and verl's own sft_loss."""

import math

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.utils.losses import sft_loss

from dft_verl.losses import LOSS_TYPES, LossConfig, make_loss_fn, segment_sum, token_weights

# Two sequences in no-padding layout. loss_mask marks the assistant tokens of input_ids; verl's
# log_probs at position t belong to token t+1, hence the left roll inside the loss.
SEQ_LEN = [5, 4]
LOSS_MASK = [[0, 0, 1, 1, 1], [0, 1, 1, 0]]  # after roll: seq0 positions 1,2,3 ; seq1 positions 0,1 (+ wraparound 0)
P = [[0.9, 0.5, 0.25, 0.8, 0.7], [0.6, 0.5, 0.1, 0.3]]  # token probabilities at each log_prob position


def nested(rows, dtype=torch.float32, requires_grad=False):
    return torch.nested.as_nested_tensor([torch.tensor(r, dtype=dtype) for r in rows], layout=torch.jagged)


def make_batch(dp_size=1, batch_num_tokens=None, pad_mode=DatasetPadMode.NO_PADDING):
    mask = nested(LOSS_MASK, dtype=torch.int64)
    n = sum(sum(r) for r in LOSS_MASK) if batch_num_tokens is None else batch_num_tokens
    td = TensorDict({"loss_mask": mask}, batch_size=[2])
    tu.assign_non_tensor(td, pad_mode=pad_mode, dp_size=dp_size, batch_num_tokens=n, global_batch_size=2)
    return td


def log_prob_leaf():
    flat = torch.tensor([math.log(p) for row in P for p in row], requires_grad=True)
    offsets = torch.tensor([0, SEQ_LEN[0], sum(SEQ_LEN)])
    nt = torch.nested.nested_tensor_from_jagged(flat, offsets)
    return flat, nt


# The aligned (rolled) mask: position t is trained iff loss_mask[t+1] == 1 within the flat layout.
# flat loss mask = [0,0,1,1,1, 0,1,1,0] -> rolled left = [0,1,1,1,0, 1,1,0,0]
TRAINED = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]


def hand_probs():
    return [P[i][t] for i, t in TRAINED]


def test_sft_is_mean_ce_and_matches_verl():
    flat, lp = log_prob_leaf()
    loss, _ = make_loss_fn(LossConfig(type="sft"))(model_output={"log_probs": lp}, data=make_batch())
    expected = -sum(math.log(p) for p in hand_probs()) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    ref, _ = sft_loss(config=None, model_output={"log_probs": lp}, data=make_batch())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_dft_golden_value():
    flat, lp = log_prob_leaf()
    loss, metrics = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp}, data=make_batch())
    # sum p * (-log p) over trained tokens / 5
    expected = sum(-p * math.log(p) for p in hand_probs()) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["dft/ce"].aggregate() == pytest.approx(-sum(math.log(p) for p in hand_probs()) / 5, rel=1e-6)
    assert metrics["dft/token_prob"].aggregate() == pytest.approx(sum(hand_probs()) / 5, rel=1e-6)


def test_dft_gradient_is_minus_grad_p():
    """d loss / d log p_t = -p_t / N on trained tokens and 0 elsewhere: the weight is detached."""
    flat, lp = log_prob_leaf()
    loss, _ = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp}, data=make_batch())
    loss.backward()
    expected = torch.zeros_like(flat)
    offs = [0, SEQ_LEN[0]]
    for i, t in TRAINED:
        expected[offs[i] + t] = -P[i][t] / 5
    torch.testing.assert_close(flat.grad, expected, rtol=1e-6, atol=1e-8)

    # ... which is exactly -grad(p)/N computed by autograd through p = exp(log p)
    flat2 = flat.detach().clone().requires_grad_(True)
    mask = torch.zeros_like(flat2)
    for i, t in TRAINED:
        mask[offs[i] + t] = 1
    (-(flat2.exp() * mask).sum() / 5).backward()
    torch.testing.assert_close(flat.grad, flat2.grad, rtol=1e-6, atol=1e-8)


def test_uniform_logits_docstring_arithmetic():
    """Uniform over V: CE = ln V per token, DFT = ln(V)/V."""
    V = 50
    lp_val = -math.log(V)
    lp = torch.nested.as_nested_tensor([torch.full((5,), lp_val), torch.full((4,), lp_val)], layout=torch.jagged)
    sft, _ = make_loss_fn(LossConfig(type="sft"))(model_output={"log_probs": lp}, data=make_batch())
    dft, _ = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp}, data=make_batch())
    assert sft.item() == pytest.approx(math.log(V), rel=1e-6)
    assert dft.item() == pytest.approx(math.log(V) / V, rel=1e-6)


def test_dft_equals_sft_when_p_is_one_limit():
    """As p -> 1 the DFT weight -> 1, so DFT -> SFT (both -> 0, ratio -> 1)."""
    eps = 1e-4
    lp = torch.nested.as_nested_tensor([torch.full((5,), math.log(1 - eps)), torch.full((4,), math.log(1 - eps))], layout=torch.jagged)
    sft, _ = make_loss_fn(LossConfig(type="sft"))(model_output={"log_probs": lp}, data=make_batch())
    dft, _ = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp}, data=make_batch())
    assert dft.item() / sft.item() == pytest.approx(1 - eps, rel=1e-6)


def test_sequence_and_geometric_variants_golden():
    flat, lp = log_prob_leaf()
    p0 = [P[0][1], P[0][2], P[0][3]]
    p1 = [P[1][0], P[1][1]]
    ce0 = -sum(math.log(p) for p in p0)
    ce1 = -sum(math.log(p) for p in p1)
    seq0, seq1 = math.prod(p0), math.prod(p1)
    geo0, geo1 = seq0 ** (1 / 3), seq1 ** (1 / 2)

    loss, _ = make_loss_fn(LossConfig(type="dft_seq"))(model_output={"log_probs": lp}, data=make_batch())
    assert loss.item() == pytest.approx((seq0 * ce0 + seq1 * ce1) / 5, rel=1e-6)
    loss, _ = make_loss_fn(LossConfig(type="dft_geo"))(model_output={"log_probs": lp}, data=make_batch())
    assert loss.item() == pytest.approx((geo0 * ce0 + geo1 * ce1) / 5, rel=1e-6)


def test_iw_sft_weight_clipped_and_requires_reference():
    flat, lp = log_prob_leaf()
    with pytest.raises(ValueError, match="reference-policy log-probs"):
        make_loss_fn(LossConfig(type="iw_sft"))(model_output={"log_probs": lp}, data=make_batch())

    # reference assigns every token log p_ref = log p - 0.3 on seq 0 and log p + 2.0 on seq 1,
    # given in input_ids alignment (shifted right by one relative to log_probs)
    shift = [0.3] * 5 + [-2.0] * 4
    ref_flat = flat.detach() - torch.tensor(shift)
    ref_input_aligned = torch.roll(ref_flat, shifts=1)
    offsets = torch.tensor([0, 5, 9])
    data = make_batch()
    data["ref_log_probs"] = torch.nested.nested_tensor_from_jagged(ref_input_aligned, offsets)
    loss, _ = make_loss_fn(LossConfig(type="iw_sft", iw_clip=(0.5, 2.0)))(model_output={"log_probs": lp}, data=data)
    # length-normalised log ratio: seq0 +0.3 -> w=exp(0.3)=1.3499 ; seq1 -2.0 -> exp(-2)=0.135 -> clipped to 0.5
    w0, w1 = math.exp(0.3), 0.5
    p0 = [P[0][1], P[0][2], P[0][3]]
    p1 = [P[1][0], P[1][1]]
    expected = (w0 * -sum(map(math.log, p0)) + w1 * -sum(map(math.log, p1))) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_padded_layout_matches_no_padding():
    """Right-padded log_probs with an aligned response_mask give the same loss as the jagged layout."""
    flat, lp = log_prob_leaf()
    L = 5
    lp_pad = torch.zeros(2, L)
    resp = torch.zeros(2, L)
    lp_pad[0, :5] = torch.tensor([math.log(p) for p in P[0]])
    lp_pad[1, :4] = torch.tensor([math.log(p) for p in P[1]])
    for i, t in TRAINED:
        resp[i, t] = 1
    for loss_type in LOSS_TYPES[:4]:
        cfg = LossConfig(type=loss_type)
        no_pad, _ = make_loss_fn(cfg)(model_output={"log_probs": lp}, data=make_batch())
        td = TensorDict({"response_mask": resp}, batch_size=[2])
        tu.assign_non_tensor(td, pad_mode=DatasetPadMode.RIGHT, dp_size=1, batch_num_tokens=5)
        pad, _ = make_loss_fn(cfg)(model_output={"log_probs": lp_pad}, data=td)
        assert pad.item() == pytest.approx(no_pad.item(), rel=1e-6), loss_type


def test_two_dp_shards_give_global_token_mean():
    """Each rank scales by dp_size / global tokens; DDP/FSDP average the ranks -> global token mean."""
    lps = [math.log(p) for p in hand_probs()]
    # shard A holds seq 0 (3 trained tokens), shard B seq 1 (2 trained tokens); global N = 5
    cfg = LossConfig(type="dft")
    losses = []
    for i in range(2):
        lp = torch.nested.as_nested_tensor([torch.tensor([math.log(p) for p in P[i]])], layout=torch.jagged)
        td = TensorDict({"loss_mask": torch.nested.as_nested_tensor([torch.tensor(LOSS_MASK[i])], layout=torch.jagged)}, batch_size=[1])
        tu.assign_non_tensor(td, pad_mode=DatasetPadMode.NO_PADDING, dp_size=2, batch_num_tokens=5)
        losses.append(make_loss_fn(cfg)(model_output={"log_probs": lp}, data=td)[0].item())
    averaged = sum(losses) / 2
    expected = sum(-math.exp(x) * x for x in lps) / 5
    assert averaged == pytest.approx(expected, rel=1e-6)


def test_sequence_normalisation_golden():
    flat, lp = log_prob_leaf()
    loss, _ = make_loss_fn(LossConfig(type="sft", normalization="sequence"))(model_output={"log_probs": lp}, data=make_batch())
    p0 = [P[0][1], P[0][2], P[0][3]]
    p1 = [P[1][0], P[1][1]]
    expected = (-sum(map(math.log, p0)) / 3 - sum(map(math.log, p1)) / 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_masked_token_contributes_nothing():
    flat, lp = log_prob_leaf()
    base, _ = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp}, data=make_batch())
    # change an untrained position's log-prob (seq0 position 0, seq0 position 4): loss unchanged
    flat2 = flat.detach().clone()
    flat2[0] = math.log(0.01)
    flat2[4] = math.log(0.02)
    lp2 = torch.nested.nested_tensor_from_jagged(flat2, torch.tensor([0, 5, 9]))
    other, _ = make_loss_fn(LossConfig(type="dft"))(model_output={"log_probs": lp2}, data=make_batch())
    assert other.item() == pytest.approx(base.item(), rel=1e-7)


def test_segment_sum_and_weights_are_detached():
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    seg = torch.tensor([0, 0, 1, 1])
    assert segment_sum(vals, seg, 2).tolist() == [3.0, 7.0]
    w = token_weights("dft", vals.log(), torch.ones(4), seg, 2)
    assert not w.requires_grad


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"type": "dpo"}, "loss.type='dpo' is not supported"),
        ({"type": "dft", "normalization": "batch"}, "loss.normalization"),
        ({"type": "dft", "iw_clip": [2.0, 1.0]}, "iw_clip"),
        ({"type": "dft", "temperature": 1.0}, "unknown key"),
    ],
)
def test_bad_config_is_rejected_with_supported_values(cfg, match):
    with pytest.raises(ValueError, match=match):
        LossConfig.from_config(cfg)
