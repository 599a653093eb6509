import math

import pytest
import torch

from trainwell.config import load_config
from trainwell.engine.optim import build_optimizer, lr_factor
from trainwell.engine.wrap import apply_activation_checkpointing
from trainwell.models.gpt import build_gpt


def sched(**kw):
    return load_config("default", [f"schedule.{k}={v!r}" if isinstance(v, str) else f"schedule.{k}={v}"
                                   for k, v in kw.items()]).schedule


def test_warmup_then_cosine_to_floor():
    s = sched(name="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, 100, s) == pytest.approx(0.1)
    assert lr_factor(9, 100, s) == pytest.approx(1.0)
    assert lr_factor(10, 100, s) == pytest.approx(1.0)
    assert lr_factor(55, 100, s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, s) == pytest.approx(0.1)


def test_linear_and_constant():
    assert lr_factor(50, 100, sched(name="linear", warmup_steps=0, min_lr_ratio=0.0)) == pytest.approx(0.5)
    assert lr_factor(99, 100, sched(name="constant", warmup_steps=0)) == 1.0


def test_wsd_is_flat_then_decays_linearly_at_the_end():
    s = sched(name="wsd", warmup_steps=10, min_lr_ratio=0.0, decay_fraction=0.3)
    assert lr_factor(5, 100, s) == pytest.approx(0.6)  # warmup
    assert lr_factor(10, 100, s) == lr_factor(69, 100, s) == 1.0  # stable
    assert lr_factor(70, 100, s) == pytest.approx(1 - 1 / 30) and lr_factor(84, 100, s) == pytest.approx(0.5)
    assert lr_factor(99, 100, s) == pytest.approx(0.0)  # the last step reaches the floor


def test_speedrun_model_options():
    m = tiny_gpt(qk_norm=True, activation="relu2", norm="rmsnorm", logit_softcap=5.0, zero_init_proj=True,
                 tie_embeddings=False, mlp_ratio=2)
    logits = m(torch.randint(0, 50, (2, 16)))
    assert logits.shape == (2, 16, 50) and logits.abs().max() <= 5.0  # soft-capped
    ids = torch.randint(0, 50, (2, 16))
    assert torch.equal(m.lm_head(m.features(ids)), m(ids))  # also for heads that call lm_head themselves
    assert m.blocks[0].mlp.fc.out_features == 64 and not m.blocks[0].attn.proj.weight.any()
    assert m.lm_head.weight is not m.tok_emb.weight
    # a plain model's parameter names (what checkpoints hold) do not change with the norm kind
    assert set(tiny_gpt(norm="rmsnorm").state_dict()) <= set(tiny_gpt(norm="layernorm").state_dict())


def test_qk_norm_types_normalise_each_head_their_own_way():
    seen = {}
    for kind in ("rms", "layer"):
        torch.manual_seed(0)
        m = tiny_gpt(qk_norm=True, qk_norm_type=kind)
        q = torch.randn(3, 2, 5, 16) * 4 + 1  # (B, heads, T, head_dim), off-centre
        seen[kind] = m.blocks[0].attn.qk_norm(q)
    assert torch.allclose(seen["rms"].square().mean(-1), torch.ones(3, 2, 5), atol=1e-3)
    assert torch.allclose(seen["layer"].mean(-1), torch.zeros(3, 2, 5), atol=1e-5)  # centred, unlike RMSNorm
    assert torch.allclose(seen["layer"].var(-1, unbiased=False), torch.ones(3, 2, 5), atol=1e-3)
    assert tiny_gpt().blocks[0].attn.qk_norm is None


def tiny_gpt(**kw):
    cfg = load_config("default", ["model.n_layer=2", "model.n_embd=32", "model.n_head=2"] +
                      [f"model.{k}={v!r}" if isinstance(v, str) else f"model.{k}={str(v).lower()}"
                       for k, v in kw.items()]).model
    return build_gpt(cfg, vocab_size=50, context=16)


def test_gpt_shapes_and_tying():
    m = tiny_gpt(tie_embeddings=True)
    assert m(torch.randint(0, 50, (3, 16))).shape == (3, 16, 50)
    assert m.lm_head.weight is m.tok_emb.weight
    assert tiny_gpt(tie_embeddings=False).lm_head.weight is not tiny_gpt(tie_embeddings=False).tok_emb.weight
    with pytest.raises(ValueError, match="longer than the model context"):
        m(torch.randint(0, 50, (1, 17)))


def test_gpt_is_causal():
    m = tiny_gpt().eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, -1] = (y[0, -1] + 1) % 50
    assert torch.allclose(m(x)[0, :-1], m(y)[0, :-1])


def test_activation_checkpointing_keeps_names_and_gradients():
    torch.manual_seed(0)
    a = tiny_gpt()
    b = tiny_gpt()
    b.load_state_dict(a.state_dict())
    assert apply_activation_checkpointing(b, 1) == 2
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randint(0, 50, (2, 16))
    a(x).sum().backward()
    b(x).sum().backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n


def test_weight_decay_only_on_matrices():
    m = tiny_gpt(bias=True)
    opt = build_optimizer(m, load_config("default", ["optim.name='adamw'"]).optim, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    assert all(p.dim() < 2 for p in no_decay["params"])


def test_peak_probe_leaves_global_rng_alone(tmp_path, monkeypatch):
    from trainwell.engine.peak import peak_flops

    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    assert peak_flops(torch.device("cpu"), torch.float32) > 1e9  # a real probe: the cache is empty
    assert torch.equal(torch.rand(3), expected)


def saved_bytes(fn) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_mlp_recomputes_gelu_with_the_same_gradients_and_less_saved(monkeypatch):
    from trainwell.models import gpt

    torch.manual_seed(0)
    model = tiny_gpt(bias=True)
    x = torch.randint(0, 50, (3, 16))

    def grads():
        model.zero_grad()
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    with_recompute, saved_with = grads(), saved_bytes(lambda: model(x))
    monkeypatch.setattr(gpt.MLP, "_recompute_gelu", lambda self, h: False)
    plain, saved_plain = grads(), saved_bytes(lambda: model(x))
    for n in plain:
        torch.testing.assert_close(with_recompute[n], plain[n], rtol=1e-6, atol=1e-7, msg=n)
    # one (tokens x 4C) float tensor less per block
    assert saved_plain - saved_with == len(model.blocks) * x.numel() * 4 * model.width * 4
