"""Muon + AdamW as one optimizer: the update rule, the parameter split, and exact state round trips."""

from __future__ import annotations

import pytest
import torch

from trainwell.config import load_config
from trainwell.engine.muon import MuonAdamW, orthogonalize
from trainwell.engine.optim import build_optimizer, set_lr
from trainwell.models.gpt import build_gpt

CPU = torch.device("cpu")


def tiny(*sets: str):
    cfg = load_config("default", ["optim.name='muon'", "model.n_layer=2", "model.n_embd=32", "model.n_head=2",
                                  *sets])
    torch.manual_seed(0)
    return cfg, build_gpt(cfg.model, vocab_size=40, context=16)


def loss_of(model, seed: int) -> torch.Tensor:
    x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.roll(-1, 1).flatten())


@pytest.mark.parametrize("shape", [(3, 32, 96), (2, 96, 32), (1, 48, 48)])
def test_newton_schulz_pushes_singular_values_towards_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(orthogonalize(g, 5, torch.float32))
    assert s.min() > 0.5 and s.max() < 1.3  # the quintic's fixed band (Jordan 2024), not exact 1s


def test_split_matrices_to_muon_and_the_rest_to_adamw():
    cfg, model = tiny("model.tie_embeddings=false")
    opt = build_optimizer(model, cfg.optim, CPU)
    muon = opt.param_groups[0]
    names = {id(p): n for n, p in model.named_parameters()}
    assert muon["use_muon"] and sorted(names[id(p)] for p in muon["params"]) == sorted(
        n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2)
    assert [s for p, s in zip(muon["params"], muon["splits"]) if s == 3] and \
        all(names[id(p)].endswith("qkv.weight") == (s == 3) for p, s in zip(muon["params"], muon["splits"]))
    adam = [names[id(p)] for g in opt.param_groups[1:] for p in g["params"]]
    assert {"tok_emb.weight", "pos_emb.weight", "lm_head.weight"} <= set(adam)
    set_lr(opt, cfg.optim.lr / 2)  # the schedule scales both parts alike
    assert muon["lr"] == pytest.approx(cfg.optim.muon_lr / 2) and opt.param_groups[1]["lr"] == cfg.optim.lr / 2


def test_update_matches_torch_muon_in_bf16():
    """Same rule as torch.optim.Muon (Nesterov momentum, NS in bf16, sqrt(max(1, A/B)) scaling)."""
    torch.manual_seed(0)
    w = torch.randn(64, 32)
    grads = [torch.randn(64, 32) for _ in range(3)]
    ours_w, ref_w = w.clone().requires_grad_(), w.clone().requires_grad_()
    ours = MuonAdamW([ours_w], [1], [], muon_lr=0.02, momentum=0.95, weight_decay=0.01, ns_steps=5,
                     ns_dtype=torch.bfloat16, lr_scale=1.0, lr=1e-3)
    ref = torch.optim.Muon([ref_w], lr=0.02, momentum=0.95, weight_decay=0.01, nesterov=True)
    for g in grads:
        ours_w.grad, ref_w.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(ours_w.detach() - w, ref_w.detach() - w, rtol=0.02, atol=2e-3)
    assert not torch.equal(ours_w.detach(), w)


def test_state_round_trip_continues_bit_for_bit():
    cfg, model = tiny("model.qk_norm=true", "model.activation='relu2'")
    twin = build_gpt(cfg.model, vocab_size=40, context=16)
    twin.load_state_dict(model.state_dict())
    a, b = build_optimizer(model, cfg.optim, CPU), build_optimizer(twin, cfg.optim, CPU)
    for step in range(3):
        for m, o in ((model, a), (twin, b)):
            loss_of(m, step).backward()
            o.step()
            o.zero_grad()
    saved = b.state_dict()
    assert "momentum_buffer" in saved["state"][0] and "exp_avg" in saved["state"][len(saved["state"]) - 1]
    c = build_optimizer(twin, cfg.optim, CPU)  # a fresh optimizer, as after a restart
    c.load_state_dict(saved)
    for step in range(3, 6):
        for m, o in ((model, a), (twin, c)):
            loss_of(m, step).backward()
            o.step()
            o.zero_grad()
    for (n, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), n


def test_muon_needs_transformer_blocks():
    from trainwell.errors import ConfigError

    cfg, _ = tiny()
    with pytest.raises(ConfigError, match="needs a model with transformer blocks"):
        build_optimizer(torch.nn.Sequential(torch.nn.Linear(4, 4)), cfg.optim, CPU)
