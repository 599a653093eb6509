"""Both sides of a preference pair in one packed row (trainwell/objectives/packing.py): the same
log-probs and gradients as the plain 2B-row forward, for fewer tokens."""

from __future__ import annotations

import pytest
import torch

from trainwell.config.schema import GPTConfig
from trainwell.models.gpt import GPT
from trainwell.objectives.dpo import dpo_loss
from trainwell.objectives.packing import ROW_MULTIPLE, accepts_packed, pack_pairs, pair_logps
from trainwell.objectives.sequence import sequence_logps


def pair_batch(prompts: list[int], chosen: list[int], rejected: list[int], vocab: int = 40, seed: int = 0):
    """2B right-padded rows, prompt + completion, the way pairs_of collates them."""
    g = torch.Generator().manual_seed(seed)
    rows = [(i, p, c) for side in (chosen, rejected) for i, (p, c) in enumerate(zip(prompts, side))]
    prompt_ids = [torch.randint(1, vocab, (p,), generator=g) for p in prompts]
    width = max(p + max(c, r) for p, c, r in zip(prompts, chosen, rejected))
    n = len(rows)
    ids, mask, lengths = torch.zeros(n, width, dtype=torch.long), torch.zeros(n, width, dtype=torch.bool), torch.zeros(n, dtype=torch.long)
    for k, (i, p, c) in enumerate(rows):
        ids[k, :p] = prompt_ids[i]
        ids[k, p:p + c] = torch.randint(1, vocab, (c,), generator=g)
        mask[k, p:p + c] = True
        lengths[k] = p + c
    return {"ids": ids, "mask": mask, "lengths": lengths}


@pytest.mark.parametrize("position, qk", [("learned", False), ("rope", True)])
def test_packed_log_probs_and_gradients_match_the_plain_forward(position, qk):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, context=32, position=position, qk_norm=qk), 40)
    batch = pair_batch(prompts=[5, 1, 9, 3], chosen=[7, 4, 1, 12], rejected=[3, 9, 6, 2])
    packed = pack_pairs(batch["ids"], batch["mask"], batch["lengths"])
    # 5+7+3, 1+4+9, 9+1+6, 3+12+2 tokens: the longest, 17, padded to a multiple of ROW_MULTIPLE
    assert packed is not None and packed.ids.shape == (4, -(-17 // ROW_MULTIPLE) * ROW_MULTIPLE)
    assert packed.ids.numel() < batch["ids"][:, :-1].numel()
    plain = sequence_logps(model, batch["ids"], batch["mask"])
    grads = torch.autograd.grad(plain.sum(), list(model.parameters()))
    ours = pair_logps(model, batch)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours.sum(), list(model.parameters())), grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pairs_that_do_not_share_a_prompt_take_the_plain_forward():
    batch = pair_batch(prompts=[4, 6], chosen=[3, 3], rejected=[3, 3])
    other = {k: v.clone() for k, v in batch.items()}
    other["ids"][2, 1] += 1  # the first pair's rejected row has another prompt
    assert pack_pairs(other["ids"], other["mask"], other["lengths"]) is None
    empty_prompt = pair_batch(prompts=[0, 2], chosen=[3, 3], rejected=[2, 2])
    assert pack_pairs(empty_prompt["ids"], empty_prompt["mask"], empty_prompt["lengths"]) is None
    from trainwell.objectives import packing

    big = pair_batch(prompts=[4, 6], chosen=[3, 3], rejected=[3, 3])
    assert pack_pairs(big["ids"], big["mask"], big["lengths"]) is not None
    old, packing.MASK_BUDGET = packing.MASK_BUDGET, 2 * 12 * 12 - 1  # 2 packed rows of 12: just over
    try:
        assert pack_pairs(big["ids"], big["mask"], big["lengths"]) is None
    finally:
        packing.MASK_BUDGET = old
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, context=16), 40)
    torch.testing.assert_close(pair_logps(model, other), sequence_logps(model, other["ids"], other["mask"]))
    assert accepts_packed(model) and not accepts_packed(torch.nn.Linear(2, 2))


def test_dpo_loss_is_the_same_packed_or_not():
    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, context=32), 40)
    batch = pair_batch(prompts=[6, 2, 8], chosen=[5, 9, 3], rejected=[7, 4, 4], seed=3)
    batch["ref_logp"] = torch.randn(6)
    packed = dpo_loss(model, batch, beta=0.1)
    plain = dpo_loss(model, {k: v for k, v in batch.items() if k != "lengths"}, beta=0.1)  # no lengths: unpacked
    torch.testing.assert_close(packed.loss, plain.loss, rtol=1e-5, atol=1e-6)
    for key in ("rewards/margins", "logps/chosen"):
        torch.testing.assert_close(packed.metrics[key], plain.metrics[key], rtol=1e-5, atol=1e-5)


def test_reward_model_scores_are_the_same_packed_or_not():
    from trainwell.models.heads import ScalarHead
    from trainwell.objectives.reward import reward_loss

    torch.manual_seed(2)
    model = ScalarHead(GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, context=32), 40))
    plain_body = torch.nn.Linear(2, 2)
    plain_body.width = 2  # a body without packed= (as a Hugging Face model is)
    assert accepts_packed(model) and not accepts_packed(ScalarHead(plain_body))
    batch = pair_batch(prompts=[3, 7, 5], chosen=[6, 2, 9], rejected=[4, 8, 1], seed=4)
    packed = reward_loss(model, batch)
    plain = reward_loss(model, {k: v for k, v in batch.items() if k != "mask"})  # no mask: unpacked
    torch.testing.assert_close(packed.loss, plain.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed.metrics["rewards/chosen"], plain.metrics["rewards/chosen"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.metrics["rewards/rejected"], plain.metrics["rewards/rejected"], rtol=1e-5, atol=1e-5)
