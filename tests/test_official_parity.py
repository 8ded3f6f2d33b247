"""``loss.normalization=micro_batch`` against the official DFT trainer's update, on two gloo ranks.

The reference is an independent transcription of yongliang-wu/DFT ``verl/verl/trainer/fsdp_dft_trainer.py``
(commit e153181), its non-sequence-parallel path with ``balance_dp_token=False`` (the default of its
``sft_trainer.yaml``):

- line 343: ``loss_mask[:, :-1]`` (its dataset marks position t when token t+1 is a response token,
  ``verl/utils/dataset/sft_dataset.py`` lines 173-178);
- lines 344, 351-373: per-token cross-entropy of the shifted logits, times the detached softmax
  probability of the label, times the mask;
- lines 428-441: divided by the rank's micro-batch token count + 1e-8 (``dp_size = 1``), then ``backward``;
- lines 453-462: the batch split into micro-batches of ``micro_batch_size_per_gpu``; only the logged value
  is divided by their number M;
- lines 464-467: ``clip_grad_norm_(max_norm=clip_grad)``, whose return value is the norm before clipping;
  lines 489-491: the logged loss averaged over ranks. FSDP averages the gradients over ranks.

Our side runs ``make_loss_fn`` as verl 0.9.1's FSDP engine does (``FSDPEngine.forward_backward_batch``): the
rank's batch in verl's no-padding layout, split by verl's own ``prepare_micro_batches``, each micro-batch's
returned loss back-propagated as is, the logged loss the sum of the returned values averaged over ranks
(``TrainingWorker._postprocess_output``). The model is a tiny random one in float64; the micro-batches hold
unequal token counts on each rank.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

VOCAB, HIDDEN, MICRO, CLIP = 13, 8, 2, 0.05  # CLIP: between the two modes' grad norms
# (prompt length, response length) of each rank's 4 sequences; micro-batches of 2 hold 8+3 and 9+5 tokens
SEQS = {0: [(2, 5), (3, 3), (1, 1), (2, 2)], 1: [(1, 6), (4, 3), (3, 4), (2, 1)]}


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(VOCAB, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, VOCAB)
    ).double()


def rank_sequences(rank):
    """Token ids and response flags of the rank's sequences (ids in 1..VOCAB-1; 0 is the pad id)."""
    g = torch.Generator().manual_seed(100 + rank)
    seqs = []
    for prompt, response in SEQS[rank]:
        ids = torch.randint(1, VOCAB, (prompt + response,), generator=g)
        seqs.append((ids, torch.tensor([0] * prompt + [1] * response)))
    return seqs


def average_grads(model, world):
    """FSDP's gradient reduction (a mean over ranks); returns copies of the averaged, unclipped gradients."""
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= world
    return [p.grad.clone() for p in model.parameters()]


def official_step(seqs, world):
    """The transcription (module docstring): right-padded batch, the official loss mask convention."""
    model = tiny_model()
    length = max(len(ids) for ids, _ in seqs) + 1
    input_ids = torch.zeros(len(seqs), length, dtype=torch.long)
    loss_mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, (ids, response) in enumerate(seqs):
        input_ids[i, : len(ids)] = ids
        first = int(response.argmax())
        loss_mask[i, first - 1 : len(ids) - 1] = 1  # position t predicts token t+1, a response token
    n_micro = -(-len(seqs) // MICRO)
    step_loss = 0.0
    for k in range(n_micro):
        ids, mask = input_ids[k * MICRO : (k + 1) * MICRO], loss_mask[k * MICRO : (k + 1) * MICRO]
        mask = mask[:, :-1].reshape(-1)
        logits = model(ids)
        shift_logits = logits[..., :-1, :].reshape(-1, VOCAB)
        shift_labels = ids[:, 1:].reshape(-1)
        loss = torch.nn.CrossEntropyLoss(reduction="none")(shift_logits, shift_labels)
        prob = torch.softmax(shift_logits, dim=-1).gather(1, shift_labels.unsqueeze(-1)).squeeze(-1)
        loss = loss * prob.detach() * mask
        loss = loss.sum() / (mask.sum() + 1e-8) * 1
        loss.backward()
        step_loss += loss.item() / n_micro
    grads = average_grads(model, world)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=CLIP)
    return grads, step_loss, grad_norm


def verl_step(seqs, world, normalization):
    """dft_verl's loss inside verl's micro-batch loop (module docstring)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.dataset_utils import DatasetPadMode
    from verl.workers.engine.utils import prepare_micro_batches

    from dft_verl.losses import LossConfig, make_loss_fn

    model = tiny_model()
    loss_fn = make_loss_fn(LossConfig(type="dft", normalization=normalization))
    jagged = lambda rows: torch.nested.as_nested_tensor(rows, layout=torch.jagged)  # noqa: E731
    data = TensorDict({"input_ids": jagged([ids for ids, _ in seqs]), "loss_mask": jagged([r for _, r in seqs])},
                      batch_size=[len(seqs)])
    batch_num_tokens = data["loss_mask"].values().sum()
    dist.all_reduce(batch_num_tokens)
    tu.assign_non_tensor(data, pad_mode=DatasetPadMode.NO_PADDING, dp_size=world, global_batch_size=len(seqs) * world,
                         batch_num_tokens=batch_num_tokens.item(), micro_batch_size_per_gpu=MICRO,
                         use_dynamic_bsz=False)
    micro_batches, _ = prepare_micro_batches(data)
    logged = 0.0
    for mb in micro_batches:
        ids = mb["input_ids"]
        logp = torch.log_softmax(model(ids.values()), dim=-1)
        labels = torch.roll(ids.values(), shifts=-1)  # verl's rolled labels: position t scores token t+1
        lp = logp.gather(1, labels.unsqueeze(-1)).squeeze(-1)
        log_probs = torch.nested.nested_tensor_from_jagged(lp, ids.offsets())
        loss, _ = loss_fn(model_output={"log_probs": log_probs}, data=mb)
        loss.backward()
        logged += loss.item()
    grads = average_grads(model, world)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=CLIP)
    return grads, logged, grad_norm, len(micro_batches)


def worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        seqs = rank_sequences(rank)
        result = {}
        for name, step in [("official", lambda: official_step(seqs, world) + (None,)),
                           ("micro_batch", lambda: verl_step(seqs, world, "micro_batch")),
                           ("token", lambda: verl_step(seqs, world, "token"))]:
            grads, loss, grad_norm, n_micro = step()
            loss = torch.tensor(loss, dtype=torch.float64)
            dist.all_reduce(loss)
            result[name] = {"loss": loss.item() / world, "grad_norm": float(grad_norm), "n_micro": n_micro,
                            "grads": grads}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    mp.spawn(worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


def test_micro_batch_reproduces_the_official_update(two_rank_results):
    """Logged loss, every parameter's gradient (before clipping) and grad_norm equal the official trainer's
    to 1e-6 on both ranks; the micro-batches really differ in token count and M = 2."""
    counts = [[sum(int(r.sum()) for _, r in rank_sequences(rank)[k * MICRO:(k + 1) * MICRO]) for k in range(2)]
              for rank in (0, 1)]
    assert counts == [[8, 3], [9, 5]]
    for res in two_rank_results:
        ours, ref = res["micro_batch"], res["official"]
        assert ours["n_micro"] == 2
        assert ours["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert ours["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-6)
        for g, g_ref in zip(ours["grads"], ref["grads"]):
            torch.testing.assert_close(g, g_ref, rtol=1e-6, atol=1e-9)


def test_token_normalisation_is_not_the_official_update(two_rank_results):
    """The check can fail: the global token mean logs a similar loss but a gradient about M = 2 times smaller
    (2.5 here: the micro-batch means also weigh tokens unequally), so one clip_grad clips the official update
    and not the token-mean one."""
    for res in two_rank_results:
        ratio = res["official"]["grad_norm"] / res["token"]["grad_norm"]
        assert 1.5 < ratio < 3.0, ratio
        assert res["token"]["grad_norm"] < CLIP < res["official"]["grad_norm"]
        assert abs(res["token"]["loss"] - res["official"]["loss"]) > 1e-4
