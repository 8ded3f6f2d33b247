"""The loss family against hand-worked values, autograd, and verl's own sft_loss."""

import math

import pytest
import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.workers.utils.losses import sft_loss

from dft_verl.losses import LOSS_TYPES, LossConfig, make_loss_fn, segment_sum, token_weights, topk_entropy

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


@pytest.mark.parametrize("dtype,weight_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.float32),
                                                (torch.float64, torch.float64)])
def test_weight_dtype_is_at_least_float32(dtype, weight_dtype):
    """The dft weight is exp(lp) in promote_types(dtype, float32): float64 log-probs keep float64 weights
    (1 - 1e-12 survives, float32 would round it to 1)."""
    lp = torch.tensor([math.log(0.5), math.log1p(-1e-12)], dtype=dtype)
    w = token_weights("dft", lp, torch.ones(2, dtype=dtype), torch.tensor([0, 0]), 1)
    assert w.dtype == weight_dtype
    assert w[0].item() == pytest.approx(0.5, rel=1e-2 if dtype == torch.bfloat16 else 1e-7)
    if dtype == torch.float64:
        assert w[1].item() == pytest.approx(1 - 1e-12, abs=1e-15) and w[1].item() < 1.0


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


# ---------------------------------------------------------------------------
# The weighting options, micro_batch normalisation and the KL anchor
# ---------------------------------------------------------------------------


def run_loss(cfg, lp=None, data=None):
    if lp is None:
        _, lp = log_prob_leaf()
    return make_loss_fn(cfg)(model_output={"log_probs": lp}, data=make_batch() if data is None else data)


def test_dft_min_weight_golden():
    """c = 0.4: trained probabilities 0.5, 0.25, 0.8, 0.6, 0.5 -> weights 0.5, 0.4, 0.8, 0.6, 0.5."""
    loss, metrics = run_loss(LossConfig(type="dft", dft_min_weight=0.4))
    weights = [0.5, 0.4, 0.8, 0.6, 0.5]
    expected = sum(-w * math.log(p) for w, p in zip(weights, hand_probs())) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["dft/weight"].aggregate() == pytest.approx(sum(weights) / 5, rel=1e-6)  # 2.8 / 5
    # the floor at 1 turns every weight into 1: SFT
    assert run_loss(LossConfig(type="dft", dft_min_weight=1.0))[0].item() == pytest.approx(
        run_loss(LossConfig(type="sft"))[0].item(), abs=1e-7)


def test_dft_power_golden():
    """q = 0.5: weights sqrt(p) = 0.7071, 0.5, 0.8944, 0.7746, 0.7071 on the trained tokens."""
    loss, metrics = run_loss(LossConfig(type="dft", dft_power=0.5))
    weights = [0.5 ** 0.5, 0.5, 0.8 ** 0.5, 0.6 ** 0.5, 0.5 ** 0.5]
    expected = sum(-w * math.log(p) for w, p in zip(weights, hand_probs())) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["dft/weight"].aggregate() == pytest.approx(sum(weights) / 5, rel=1e-6)
    # floor and power compose: max(sqrt(p), 0.75)
    floored = [max(w, 0.75) for w in weights]
    loss, _ = run_loss(LossConfig(type="dft", dft_power=0.5, dft_min_weight=0.75))
    assert loss.item() == pytest.approx(sum(-w * math.log(p) for w, p in zip(floored, hand_probs())) / 5, rel=1e-6)


@pytest.mark.parametrize("power,same_as", [(1.0, "dft"), (0.0, "sft")])
def test_dft_power_endpoints_are_dft_and_sft(power, same_as):
    """q=1 is DFT and q=0 is SFT, in the loss and in its gradient, to 1e-7."""
    flat_a, lp_a = log_prob_leaf()
    flat_b, lp_b = log_prob_leaf()
    a, _ = run_loss(LossConfig(type="dft", dft_power=power), lp=lp_a)
    b, _ = run_loss(LossConfig(type=same_as), lp=lp_b)
    a.backward()
    b.backward()
    assert abs(a.item() - b.item()) < 1e-7
    torch.testing.assert_close(flat_a.grad, flat_b.grad, rtol=0, atol=1e-7)


def shard(rows, masks, dp_size, global_seqs, micro=1):
    """One micro-batch of a rank: rows of token probabilities and their loss masks (verl layout).
    Returns (flat log-prob leaf, jagged log_probs over it, batch)."""
    flat = torch.tensor([math.log(p) for r in rows for p in r], dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([0] + [len(r) for r in rows]).cumsum(0)
    lp = torch.nested.nested_tensor_from_jagged(flat, offsets)
    td = TensorDict({"loss_mask": nested(masks, dtype=torch.int64)}, batch_size=[len(rows)])
    tu.assign_non_tensor(td, pad_mode=DatasetPadMode.NO_PADDING, dp_size=dp_size, batch_num_tokens=10,
                         global_batch_size=global_seqs, micro_batch_size_per_gpu=micro, use_dynamic_bsz=False)
    return flat, lp, td


# Two ranks x two micro-batches of one sequence each, 3 + 2 and 1 + 4 trained tokens (10 in all).
# Each row's last position is never trained (the rolled mask wraps to the next sequence's first token, 0).
MICRO = {
    0: [([0.5, 0.25, 0.8, 0.9], [0, 1, 1, 1]), ([0.6, 0.5, 0.3], [0, 1, 1])],
    1: [([0.2, 0.7], [0, 1]), ([0.9, 0.4, 0.5, 0.1, 0.8], [0, 1, 1, 1, 1])],
}


def test_micro_batch_normalisation_golden():
    """The official trainer's step: logged loss = per-micro-batch token means averaged over micro-batches
    (M=2) and ranks; gradient = their SUM over a rank's micro-batches (ranks averaged by the all-reduce).
    sft logged: ((-ln .5 - ln .25 - ln .8)/3 + (-ln .6 - ln .5)/2 + (-ln .2)/1 + (-ln .9 - ln .4 - ln .5 - ln .1)/4) / 4;
    dft gradient w.r.t. lp_t of micro-batch k: -p_t / n_k (no 1/M)."""
    trained = {(r, k): [p for p, m in zip(row[:-1], mask[1:]) if m] for r, mbs in MICRO.items()
               for k, (row, mask) in enumerate(mbs)}
    assert [len(v) for v in trained.values()] == [3, 2, 1, 4]
    for loss_type, weight in [("sft", lambda p: 1.0), ("dft", lambda p: p)]:
        cfg = LossConfig(type=loss_type, normalization="micro_batch")
        rank_losses = []
        for r, mbs in MICRO.items():
            total = 0.0
            for row, mask in mbs:
                flat, lp, td = shard([row], [mask], dp_size=2, global_seqs=4, micro=1)
                loss = make_loss_fn(cfg)(model_output={"log_probs": lp}, data=td)[0]
                loss.backward()
                total += loss.item()
                n_k = sum(mask[1:])
                expected_grad = [-weight(p) / n_k if m else 0.0 for p, m in zip(row, mask[1:] + [0])]
                torch.testing.assert_close(flat.grad, torch.tensor(expected_grad, dtype=torch.float64),
                                           rtol=1e-12, atol=1e-15)
            rank_losses.append(total)
        expected = sum(sum(-weight(p) * math.log(p) for p in ps) / len(ps) for ps in trained.values()) / 4
        if loss_type == "sft":  # by hand: (0.76753 + 0.60199 + 1.60944 + 1.00435) / 4; token mean 0.91334
            assert expected == pytest.approx(0.995825, abs=1e-6)
        assert sum(rank_losses) / 2 == pytest.approx(expected, rel=1e-9), loss_type
        # ... which is not the global token mean when the micro-batches differ in size
        token_mean = sum(-weight(p) * math.log(p) for ps in trained.values() for p in ps) / 10
        assert abs(expected - token_mean) > 1e-3


def test_micro_batch_is_token_times_m_when_counts_are_equal():
    """Every micro-batch holding the same number of trained tokens (M = 2 on one rank): micro_batch logs
    token's value, and its gradient is M = 2 times token's (the factor that changes where clip_grad acts)."""
    mbs = [([0.5, 0.25, 0.9], [0, 1, 1]), ([0.6, 0.3, 0.8], [0, 1, 1])]
    value, grads = {}, {}
    for norm in ("micro_batch", "token"):
        value[norm], grads[norm] = 0.0, []
        for row, mask in mbs:
            flat, lp, td = shard([row], [mask], dp_size=1, global_seqs=2)
            tu.assign_non_tensor(td, batch_num_tokens=4)
            loss = make_loss_fn(LossConfig(type="dft", normalization=norm))(model_output={"log_probs": lp}, data=td)[0]
            loss.backward()
            value[norm] += loss.item()
            grads[norm].append(flat.grad)
    assert value["micro_batch"] == pytest.approx(value["token"], rel=1e-12)
    for g_micro, g_token in zip(grads["micro_batch"], grads["token"]):
        assert g_token.abs().sum() > 0
        torch.testing.assert_close(g_micro, 2 * g_token, rtol=1e-12, atol=0)


def test_normalizer_takes_only_what_its_mode_divides_by():
    """Each normalisation names the counts it needs; a missing one is refused, an unused one is not asked for."""
    from dft_verl.losses import Normalizer

    Normalizer("micro_batch", num_micro_batches=4)
    Normalizer("token", batch_num_tokens=10, dp_size=2)
    Normalizer("sequence", global_num_seqs=8, dp_size=2)
    with pytest.raises(ValueError, match="num_micro_batches"):
        Normalizer("micro_batch", batch_num_tokens=10, dp_size=2)
    with pytest.raises(ValueError, match="global_num_seqs"):
        Normalizer("sequence", batch_num_tokens=10, dp_size=2)


def test_micro_batch_rejects_dynamic_batch_size():
    _, lp, td = shard([[0.5, 0.5]], [[0, 1]], dp_size=1, global_seqs=1)
    tu.assign_non_tensor(td, use_dynamic_bsz=True)
    with pytest.raises(ValueError, match="use_dynamic_bsz=False"):
        make_loss_fn(LossConfig(normalization="micro_batch"))(model_output={"log_probs": lp}, data=td)


def test_kl_anchor_matches_independent_formula_and_gradient():
    """KL(p_ref || p_theta) = sum_v p_ref (log p_ref - log p_theta), in float64 by hand; its gradient
    w.r.t. the student logits is softmax(student) - softmax(ref)."""
    from dft_verl.losses import kl_anchor_per_token

    student = torch.tensor([[1.0, 0.0, -1.0, 0.5], [2.0, 2.0, 0.0, -3.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, -3.0], [3.0, -1.0, 0.5, 0.0]])
    kl = kl_anchor_per_token(student, ref)
    for t in range(3):
        zs = sum(math.exp(x) for x in student[t].tolist())
        zr = sum(math.exp(x) for x in ref[t].tolist())
        q = [math.exp(x) / zs for x in student[t].tolist()]
        p = [math.exp(x) / zr for x in ref[t].tolist()]
        assert kl[t].item() == pytest.approx(sum(pv * math.log(pv / qv) for pv, qv in zip(p, q)), abs=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)  # identical rows
    kl.sum().backward()
    torch.testing.assert_close(student.grad, torch.softmax(student.detach(), -1) - torch.softmax(ref, -1))


def test_asft_loss_through_the_logits_processor_call():
    """verl's engine calls the loss first with student_logits (the KL per packed token), then with
    model_output; asft = dft + lambda * token mean of KL over trained tokens, KL 0 on untrained ones."""
    torch.manual_seed(0)
    n_tok, vocab = sum(SEQ_LEN), 6
    student = torch.randn(n_tok, vocab, requires_grad=True)
    ref_logits = torch.randn(n_tok, vocab)
    data = make_batch()
    lam = 0.3
    fn = make_loss_fn(LossConfig(type="asft", kl_anchor_coef=lam), reference=lambda d: ref_logits)
    kl = fn(student_logits=student.unsqueeze(0), data=data)["kl_anchor"]
    assert kl.shape == (1, n_tok)
    offs = [0, SEQ_LEN[0]]
    trained_rows = [offs[i] + t for i, t in TRAINED]
    untrained = [r for r in range(n_tok) if r not in trained_rows]
    assert kl[0, untrained].abs().max().item() == 0.0

    labels = torch.roll(torch.randint(0, vocab, (n_tok,)), -1)
    lp_flat = torch.log_softmax(student, -1).gather(-1, labels[:, None])[:, 0]
    offsets = torch.tensor([0, SEQ_LEN[0], n_tok])
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(lp_flat, offsets),
                    "kl_anchor": torch.nested.nested_tensor_from_jagged(kl[0], offsets)}
    loss, metrics = fn(model_output=model_output, data=data)
    ref_kl = torch.nn.functional.kl_div(torch.log_softmax(student.detach(), -1), torch.log_softmax(ref_logits, -1),
                                        log_target=True, reduction="none").sum(-1)
    lp = lp_flat.detach()
    expected = sum(-lp[r].exp() * lp[r] + lam * ref_kl[r] for r in trained_rows) / 5
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["dft/kl_anchor"].aggregate() == pytest.approx(ref_kl[trained_rows].mean().item(), rel=1e-6)
    loss.backward()  # the anchor's gradient reaches the student logits
    assert student.grad[untrained].abs().max().item() == 0.0
    assert student.grad[trained_rows].abs().min().item() > 0.0


def test_kl_anchor_needs_reference_and_logits():
    with pytest.raises(ValueError, match="needs a reference model"):
        make_loss_fn(LossConfig(type="asft"))
    fn = make_loss_fn(LossConfig(type="dft", kl_anchor_coef=0.1), reference=lambda d: None)
    with pytest.raises(RuntimeError, match="distillation_use_topk"):
        fn(model_output={"log_probs": log_prob_leaf()[1]}, data=make_batch())


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"type": "sft", "dft_power": 0.5}, "do not apply to loss.type='sft'"),
        ({"type": "iw_sft", "dft_min_weight": 0.1}, "do not apply"),
        ({"type": "dft", "dft_power": -1}, "dft_power must be >= 0"),
        ({"type": "dft", "dft_min_weight": 1.5}, r"dft_min_weight must be in \[0, 1\]"),
        ({"type": "asft", "kl_anchor_coef": 0}, "asft needs loss.kl_anchor_coef > 0"),
        ({"type": "dft", "kl_anchor_coef": -0.1}, "kl_anchor_coef must be >= 0"),
        ({"type": "eaft", "eaft_topk": 1}, "eaft_topk must be an integer >= 2"),
        ({"type": "eaft", "eaft_topk": 2.5}, "eaft_topk must be an integer >= 2"),
        ({"type": "eaft", "eaft_alpha": -1}, "eaft_alpha must be >= 0"),
        ({"type": "dft", "eaft_alpha": 2}, "do not apply to loss.type='dft'"),
    ],
)
def test_bad_weighting_options_are_rejected(cfg, match):
    with pytest.raises(ValueError, match=match):
        LossConfig.from_config(cfg)


def test_asft_defaults_and_anchor_on_any_weighting():
    assert LossConfig(type="asft").kl_anchor_coef == 0.1
    assert LossConfig(type="asft").weighting == "dft"
    assert not LossConfig(type="dft").uses_kl_anchor
    assert LossConfig(type="sft", kl_anchor_coef=0.05).uses_kl_anchor


def trainer_config(**overrides):
    from omegaconf import OmegaConf

    cfg = {"model": {"path": "unused", "use_fused_kernels": False}, "engine": {"strategy": "fsdp2"},
           "data": {"use_dynamic_bsz": True}, "loss": {"type": "dft"}}
    for key, value in overrides.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return OmegaConf.create(cfg)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"model__use_fused_kernels": True, "loss__type": "asft"}, "need the full logits"),
        ({"engine__ulysses_sequence_parallel_size": 2, "loss__kl_anchor_coef": 0.1}, "ulysses"),
        ({"loss__normalization": "micro_batch"}, "use_dynamic_bsz=False"),
        ({"model__use_fused_kernels": True, "loss__type": "eaft"}, "need the full logits"),
        ({"data__pad_mode": "right_padding", "loss__type": "eaft"}, "pad_mode=no_padding only"),
    ],
)
def test_trainer_start_up_rejects_impossible_combinations(overrides, match):
    from dft_verl.trainer.sft import check_loss_setup

    with pytest.raises(ValueError, match=match):
        check_loss_setup(trainer_config(**overrides))


# ---------------------------------------------------------------------------------------------------- eaft


def test_topk_entropy_golden():
    """k=2 of logits (ln 3, 0, -5, -6): q = (3/4, 1/4), H = -(3/4 ln 3/4 + 1/4 ln 1/4) = 0.562335 nats, / ln 2 =
    0.811278; k=4 of four equal logits: H = ln 4, normalised 1; one certain token: 0."""
    logits = torch.tensor([[math.log(3.0), 0.0, -5.0, -6.0], [1.0, 1.0, 1.0, 1.0], [50.0, 0.0, 0.0, 0.0]])
    assert topk_entropy(logits, 2)[0].item() == pytest.approx(0.811278, abs=1e-6)
    h4 = topk_entropy(logits, 4)
    assert h4[1].item() == pytest.approx(1.0, abs=1e-6)
    assert h4[2].item() == pytest.approx(0.0, abs=1e-6)
    assert topk_entropy(logits, 20)[1].item() == pytest.approx(1.0, abs=1e-6)  # k > V: the full entropy over ln V
    assert not topk_entropy(logits.requires_grad_(), 2).requires_grad


def test_eaft_weight_is_the_authors_entropy_over_ln_k():
    """Against an independent transcription of the EAFT authors' weight (their LLaMA-Factory fork, as carried by
    Axolotl's eaft loss): softmax of the top-k logits, entropy -sum p log(p + 1e-10), raised to alpha, with no
    normalisation. Ours divides the entropy by ln k first, so theirs = ours * (ln k)^alpha (a constant factor)."""
    torch.manual_seed(0)
    logits = torch.randn(7, 50) * 3
    for k, alpha in [(20, 1.0), (5, 0.5), (20, 2.0)]:
        top = torch.topk(logits, k, dim=-1).values
        p = torch.softmax(top, dim=-1)
        theirs = (-(p * torch.log(p + 1e-10)).sum(-1)) ** alpha
        n = logits.shape[0]
        ours = token_weights("eaft", torch.zeros(n), torch.ones(n), torch.arange(n), n,
                             entropy=topk_entropy(logits, k), eaft_alpha=alpha)
        torch.testing.assert_close(ours * math.log(k) ** alpha, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_eaft_loss_through_the_logits_processor_call(alpha):
    """The engine's two calls: the logits give every packed row's entropy; the loss is the token mean over trained
    rows of -(H_r / ln k)^alpha * lp_r, the weight detached: its gradient equals autograd's through a loss built with
    the weights as constants."""
    torch.manual_seed(1)
    n_tok, vocab, k = sum(SEQ_LEN), 30, 20
    student = torch.randn(n_tok, vocab, requires_grad=True)
    labels = torch.randint(0, vocab, (n_tok,))
    fn = make_loss_fn(LossConfig(type="eaft", eaft_alpha=alpha))
    out = fn(student_logits=student.unsqueeze(0), data=make_batch())
    assert set(out) == {"eaft_entropy"} and out["eaft_entropy"].shape == (1, n_tok)
    offsets = torch.tensor([0, SEQ_LEN[0], n_tok])
    lp_flat = torch.log_softmax(student, -1).gather(-1, labels[:, None])[:, 0]
    model_output = {"log_probs": torch.nested.nested_tensor_from_jagged(lp_flat, offsets),
                    "eaft_entropy": torch.nested.nested_tensor_from_jagged(out["eaft_entropy"][0], offsets)}
    loss, metrics = fn(model_output=model_output, data=make_batch())
    (grad,) = torch.autograd.grad(loss, student)

    rows = [[0, SEQ_LEN[0]][i] + t for i, t in TRAINED]
    s = student.detach().clone().requires_grad_()
    top = torch.topk(s.detach(), k, -1).values
    q = torch.softmax(top, -1)
    h = -(q * q.log()).sum(-1) / math.log(k)
    lp = torch.log_softmax(s, -1).gather(-1, labels[:, None])[:, 0]
    expected = sum(-(h[r] ** alpha) * lp[r] for r in rows) / len(rows)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()
    torch.testing.assert_close(grad, s.grad, rtol=1e-5, atol=1e-7)
    assert metrics["dft/topk_entropy"].aggregate() == pytest.approx(h[rows].mean().item(), rel=1e-6)
    assert metrics["dft/weight"].aggregate() == pytest.approx((h[rows] ** alpha).mean().item(), rel=1e-6)


def test_eaft_with_alpha_zero_is_sft():
    lp_flat, lp = log_prob_leaf()
    n = lp_flat.numel()
    entropy = torch.nested.nested_tensor_from_jagged(torch.rand(n), torch.tensor([0, SEQ_LEN[0], n]))
    eaft, _ = make_loss_fn(LossConfig(type="eaft", eaft_alpha=0.0))(
        model_output={"log_probs": lp, "eaft_entropy": entropy}, data=make_batch())
    sft, _ = make_loss_fn(LossConfig(type="sft"))(model_output={"log_probs": lp}, data=make_batch())
    assert eaft.item() == pytest.approx(sft.item(), rel=1e-7)
    with pytest.raises(RuntimeError, match="distillation_use_topk"):
        make_loss_fn(LossConfig(type="eaft"))(model_output={"log_probs": lp}, data=make_batch())
