"""The preference losses against values computed by hand from their papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from trainwell.objectives.dpo import dpo_loss, dpo_losses
from trainwell.objectives.grpo import grpo_loss, group_advantages, k3
from trainwell.objectives.ppo_lm import kl_per_token, token_gae, token_rewards, whiten
from trainwell.objectives.reward import bradley_terry, reward_loss
from trainwell.objectives.sft import sft_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


class Fixed(torch.nn.Module):
    """A 'model' whose next-token distribution is the same at every position: p = softmax(logits)."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(*ids.shape, -1)


def test_bradley_terry_and_centring():
    loss, m = bradley_terry(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), center_coef=0.1)
    # mean(-log s(1), -log s(-1)) + 0.1 * mean((1 + 0)^2, (0 + 1)^2)
    assert loss.item() == pytest.approx((-logsig(1) - logsig(-1)) / 2 + 0.1)
    assert m["accuracy"].item() == 0.5 and m["margin"].item() == 0.0


def test_reward_model_reads_the_score_at_each_rows_last_token():
    class Positions(torch.nn.Module):  # score at position t = t (so the last real token's index is read)
        def forward(self, ids):
            return torch.arange(ids.shape[1], dtype=torch.float32).expand(ids.shape)

    ids = torch.zeros(4, 6, dtype=torch.long)
    out = reward_loss(Positions(), {"ids": ids, "lengths": torch.tensor([6, 3, 2, 5])})
    # chosen rewards 5, 2; rejected 1, 4
    assert out.loss.item() == pytest.approx((-logsig(4) - logsig(-2)) / 2)
    assert out.metrics["rewards/chosen"].item() == 3.5 and out.units == 2


def test_dpo_variants_by_hand():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-1.0, -3.0, -2.0, -2.0))  # h = (-1 + 2) - (-3 + 2) = 2
    assert dpo_losses(pc, pr, rc, rr, beta=0.5).item() == pytest.approx(-logsig(1.0))
    assert dpo_losses(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1).item() == pytest.approx(
        -0.9 * logsig(1.0) - 0.1 * logsig(-1.0))
    assert dpo_losses(pc, pr, rc, rr, beta=0.5, loss_type="ipo").item() == pytest.approx((2 - 1) ** 2)
    assert dpo_losses(pc, pr, rc, rr, beta=0.25, loss_type="hinge").item() == pytest.approx(1 - 0.5)


def test_dpo_counts_only_completion_tokens_and_reports_implicit_rewards():
    model = Fixed([0.0, math.log(3.0)])  # p(token 1) = 3/4, p(token 0) = 1/4 at every position
    ids = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])  # a chosen row, then a rejected row
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)  # completions: 2 and 3 tokens
    batch = {"ids": ids, "mask": mask, "ref_logp": torch.tensor([-1.0, -2.0])}
    out = dpo_loss(model, batch, beta=0.1)
    pc, pr = 2 * math.log(0.75), 3 * math.log(0.25)  # the prompt tokens never count
    h = (pc + 1.0) - (pr + 2.0)
    assert out.loss.item() == pytest.approx(-logsig(0.1 * h), rel=1e-5)
    assert out.metrics["logps/chosen"].item() == pytest.approx(pc, rel=1e-5)
    assert out.metrics["rewards/margins"].item() == pytest.approx(0.1 * h, rel=1e-5)
    assert out.metrics["rewards/accuracies"].item() == 1.0
    # a reference model instead of precomputed log-probs: the same numbers
    ref = Fixed([0.0, 0.0])
    via_model = dpo_loss(model, {"ids": ids, "mask": mask}, beta=0.1,
                         reference=lambda b: (torch.log_softmax(ref(b["ids"][:, :-1]), -1)
                                              .gather(-1, b["ids"][:, 1:, None]).squeeze(-1) * b["mask"][:, 1:]).sum(-1))
    expected = -logsig(0.1 * ((pc - 2 * math.log(0.5)) - (pr - 3 * math.log(0.5))))
    assert via_model.loss.item() == pytest.approx(expected, rel=1e-5)


def test_sft_loss_ignores_the_prompt():
    model = Fixed([5.0, 0.0])  # predicts token 0 with p = e^5 / (e^5 + 1)
    ids = torch.tensor([[1, 1, 1, 0, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1]], dtype=torch.bool)  # only the two 0s are targets
    out = sft_loss(model, {"ids": ids, "mask": mask})
    assert out.loss.item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 1)), rel=1e-5)
    assert out.units == 2 and out.metrics["mean_token_accuracy"].item() == 1.0


def test_group_advantages_and_k3():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.5, 0.5]), group_size=2)
    s = math.sqrt(0.5)  # unbiased std of (1, 0)
    assert adv.tolist() == pytest.approx([0.5 / (s + 1e-4), -0.5 / (s + 1e-4), 0.0, 0.0])
    assert group_advantages(torch.tensor([1.0, 0.0]), 2, scale="none").tolist() == [0.5, -0.5]
    # k3 at p = 1/2, p_ref = 1/4: r = 1/2, (r - 1) - log r
    assert k3(torch.tensor(math.log(0.5)), torch.tensor(math.log(0.25))).item() == pytest.approx(-0.5 + math.log(2))
    assert kl_per_token(torch.tensor(-1.0), torch.tensor(-3.0), "k1").item() == 2.0


def test_grpo_token_and_sequence_averages_differ_by_completion_length():
    model = Fixed([0.0, 0.0])
    ids = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)  # 3 and 1 completion tokens
    batch = {"ids": ids, "mask": mask, "adv": torch.tensor([1.0, -1.0])}
    # on-policy (ratio 1): per-token loss = -A; token mean (3 * -1 + 1 * 1) / 4, sequence mean (-1 + 1) / 2
    assert grpo_loss(model, batch).loss.item() == pytest.approx(-0.5)
    assert grpo_loss(model, batch, loss_type="sequence").loss.item() == pytest.approx(0.0)
    # off-policy: old log-probs lower by 1 nat -> ratio e > 1.2 is clipped for the positive advantage
    old = torch.full((2, 3), math.log(0.5) - 1.0)
    out = grpo_loss(model, {**batch, "old_logp": old}, clip=0.2)
    assert out.loss.item() == pytest.approx((3 * -1.2 + 1 * math.e) / 4, rel=1e-5)
    assert out.metrics["clip_ratio/high_mean"].item() == pytest.approx(0.75)


def test_grpo_kl_in_the_reward_by_hand():
    """kl_in_reward: advantages of r - beta * sum_t log(pi / pi_ref), no reference log-probs for the loss."""
    from contextlib import nullcontext

    from trainwell.paradigms.preferences import grpo_annotate

    policy = Fixed([0.0, 0.0])  # p = 1/2 for every token
    ref = lambda inputs, targets: torch.full(targets.shape, math.log(0.25))  # noqa: E731 (p_ref = 1/4)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)  # 3, 1, 2, 2 tokens
    buf = {"ids": torch.zeros(4, 4, dtype=torch.long), "mask": mask, "reward": torch.tensor([1.0, 0.0, 0.5, 0.5])}
    common = dict(ref_logps=ref, autocast=nullcontext, group_size=2, scale="none", temperature=1.0, reuse=False)
    with torch.no_grad():  # as the rollout calls it
        out = grpo_annotate(policy, buf, kl_in_reward=0.1, **common)
        plain = grpo_annotate(policy, buf, **common)  # the KL stays in the loss: plain advantages, reference log-probs
    gap = 1.0 - 0.1 * (3 - 1) * math.log(2)  # (1 - 0.1 * 3 log 2) - (0 - 0.1 * 1 log 2)
    assert out["adv"].tolist() == pytest.approx([gap / 2, -gap / 2, 0.0, 0.0])
    assert "ref_logp" not in out and out["stats"]["kl"] == pytest.approx(2 * math.log(2))
    assert plain["adv"].tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0]) and "ref_logp" in plain


def online_pairs(reward: list[float], group_size: int, label_temperature: float = 0.0, seed: int = 0) -> dict:
    from contextlib import nullcontext

    from trainwell.paradigms.preferences import online_dpo_annotate

    n = len(reward)
    ids = torch.arange(n)[:, None].repeat(1, 3)  # row i: token i everywhere (to see where each row went)
    buf = {"ids": ids, "mask": torch.tensor([[0, 1, 1]] * n, dtype=torch.bool), "lengths": torch.full((n,), 3),
           "reward": torch.tensor(reward)}
    ref = lambda inputs, targets: torch.full(targets.shape, -1.0)  # noqa: E731
    with torch.no_grad():
        return online_dpo_annotate(Fixed([0.0] * n), buf, torch.Generator().manual_seed(seed), ref_logps=ref,
                                   autocast=nullcontext, group_size=group_size, label_temperature=label_temperature)


def test_online_dpo_pairs_the_best_and_worst_of_each_group():
    out = online_pairs([0.1, 0.9, 0.5, 0.2, 0.3, 0.3, 0.3, 0.3], group_size=4)  # the second group is all tied
    # chosen rows first (best of each group), then the rejected ones (worst)
    assert out["ids"][:, 0].tolist() == [1, 4, 0, 4] and out["reward"].tolist() == pytest.approx([0.9, 0.3, 0.1, 0.3])
    assert out["pair_weight"].tolist() == [1.0, 0.0] and out["ref_logp"].tolist() == [-2.0] * 4  # 2 tokens x -1
    assert out["stats"]["pairs/untied"] == 0.5 and out["stats"]["pairs/label_agrees"] == 1.0


def test_online_dpo_noisy_judge_draws_bradley_terry_labels_from_the_generator():
    reward = [1.0, 0.0] * 2000
    sure = online_pairs(reward, group_size=2, label_temperature=1e-3)
    assert sure["stats"]["pairs/label_agrees"] == 1.0  # a near-zero temperature is the plain ranking
    noisy = online_pairs(reward, group_size=2, label_temperature=1.0)
    # P(the better one is chosen) = sigmoid(1 / 1) = 0.731; 2000 draws: standard error 0.01
    assert noisy["stats"]["pairs/label_agrees"] == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.04)
    again = online_pairs(reward, group_size=2, label_temperature=1.0)
    other = online_pairs(reward, group_size=2, label_temperature=1.0, seed=1)
    assert torch.equal(again["ids"], noisy["ids"]) and not torch.equal(other["ids"], noisy["ids"])


def test_dpo_pair_weights_drop_a_pair_from_the_loss():
    model = Fixed([0.0, math.log(3.0)])
    ids = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0], [0, 1, 0]])  # chosen rows 0, 1; rejected rows 2, 3
    mask = torch.tensor([[0, 1, 1]] * 4, dtype=torch.bool)
    ref = torch.tensor([-1.0, -1.5, -2.0, -1.0])
    both = {"ids": ids, "mask": mask, "ref_logp": ref}
    first = {"ids": ids[[0, 2]], "mask": mask[[0, 2]], "ref_logp": ref[[0, 2]]}
    weighted = dpo_loss(model, {**both, "pair_weight": torch.tensor([1.0, 0.0])}, beta=0.1)
    assert weighted.loss.item() == pytest.approx(dpo_loss(model, first, beta=0.1).loss.item(), rel=1e-6)
    assert weighted.loss.item() != pytest.approx(dpo_loss(model, both, beta=0.1).loss.item(), rel=1e-3)
    # the pairs are the policy's samples: kl = mean over all rows of log pi - log pi_ref
    logp = torch.tensor([2 * math.log(0.75), math.log(0.25) + math.log(0.75), 2 * math.log(0.25),
                         math.log(0.75) + math.log(0.25)])
    assert weighted.metrics["kl"].item() == pytest.approx(float((logp - ref).mean()), rel=1e-5)
    assert "kl" not in dpo_loss(model, both, beta=0.1).metrics


def test_ppo_token_rewards_and_gae_by_hand():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    r = token_rewards(torch.tensor([[0.1, 0.2, 0.3, 0.4]]) * mask, mask, torch.tensor([2.0]), kl_coef=0.5)
    assert r.tolist()[0] == pytest.approx([0.0, -0.1, -0.15 + 2.0, 0.0])
    values = torch.tensor([[9.0, 0.5, 0.2, 9.0]])  # outside the completion they must not matter
    adv, ret = token_gae(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), values, mask, gamma=1.0, lam=0.5)
    # t=2: delta = 1 - 0.2 = 0.8; t=1: delta = 0 + 0.2 - 0.5 = -0.3, A = -0.3 + 0.5 * 0.8 = 0.1
    assert adv.tolist()[0] == pytest.approx([0.0, 0.1, 0.8, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.0, 0.6, 1.0, 0.0])
    w = whiten(torch.tensor([[5.0, 1.0, 3.0]]), torch.tensor([[0.0, 1.0, 1.0]]))
    assert w.tolist()[0] == pytest.approx([0.0, -1.0, 1.0], abs=1e-4)
