"""A GPT-style decoder-only transformer: a plain nn.Module, nothing training-specific.

Pre-norm blocks, learned or rotary positions, fused QKV projection and PyTorch's
``scaled_dot_product_attention`` (which picks a flash/memory-efficient kernel where one exists).
Precision, activation checkpointing, compile and parallelism are applied from outside.

``forward(idx)`` is the training forward. ``forward(idx, cache)`` runs the same layers on the next
tokens of a batch of sequences whose earlier keys and values are held in a
:class:`~trainwell.models.kv_cache.KVCache` (incremental decoding; see trainwell/engine/generate.py).
"""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from trainwell.config.schema import GPTConfig
from trainwell.models.kv_cache import KVCache


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's always has one when affine)."""

    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """x / rms(x) * weight (Zhang & Sennrich 2019): LayerNorm without the mean, same parameter name."""

    def __init__(self, dim: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, 1e-5)


def norm(cfg: GPTConfig) -> nn.Module:
    return RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else LayerNorm(cfg.n_embd, cfg.bias)


def relu2(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# Set from outside (trainwell/engine/precision.py) under bf16 autocast on CPU. There torch's fused
# attention kernel is slow in bf16 (its backward) and the math path makes several bf16 passes; the
# fused kernel in fp32 is 1.6-1.9x faster than either (bench/RESULTS.md, issue 12, session 10), so
# attention runs in fp32, on bf16 inputs and back to bf16 for the output projection.
FP32_ATTENTION: contextvars.ContextVar[bool] = contextvars.ContextVar("trainwell_fp32_attention", default=False)
_FUSED_FIRST = [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]


def attention_dtype(q: torch.Tensor) -> torch.dtype:
    """What :func:`attention` computes in for queries ``q``: fp32 for bf16 where FP32_ATTENTION says so."""
    return torch.float32 if q.dtype == torch.bfloat16 and FP32_ATTENTION.get() else q.dtype


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: object) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, in fp32 where FP32_ATTENTION says so."""
    if attention_dtype(q) == q.dtype:
        return F.scaled_dot_product_attention(q, k, v, **kw)
    mask = kw.get("attn_mask")
    if isinstance(mask, torch.Tensor) and mask.is_floating_point():
        kw["attn_mask"] = mask.float()
    with torch.autocast(q.device.type, enabled=False), sdpa_kernel(_FUSED_FIRST):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw).to(q.dtype)


def rms_qk(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=1e-5)


def layer_qk(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=1e-5)


def softcap(module: nn.Module, args: object, logits: torch.Tensor, *, cap: float) -> torch.Tensor:
    """c * tanh(logits / c): logits bounded smoothly to (-c, c) (a forward hook on the output layer)."""
    return cap * torch.tanh(logits / cap)


def dropout(p: float) -> nn.Module:
    """Dropout, or nothing at p = 0 (saves a call per layer per decoded token; no parameters either way)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def rotary_tables(context: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of position * frequency, (T, head_dim/2), as in RoFormer (Su et al. 2021)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(context).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) feature pair of x (B, H, T, D) by its position's angle.

    cos/sin: (T, D/2) for positions 0..T-1, or (B, 1, T, D/2) gathered at each row's positions.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


@dataclass
class Packed:
    """Several sequences sharing a prefix in one row (trainwell/objectives/packing.py): each token's
    position in its own sequence and which tokens each one may attend to.

    positions: (B, T) position ids; mask: (B, 1, T, T) bool, True where the query (row) sees the key.
    """
    positions: torch.Tensor
    mask: torch.Tensor
    _additive: dict[torch.dtype, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The mask as 0 / -inf in ``dtype`` (what attention converts a bool mask to), made once for
        every layer: given the bool mask, each layer converts its own copy and autograd keeps all of
        them for the backward (4 layers x B x T x T floats)."""
        m = self._additive.get(dtype)
        if m is None:
            m = torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device)
            self._additive[dtype] = m = m.masked_fill_(~self.mask, float("-inf"))
        return m


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool):
        super().__init__()
        self.n_head, self.dropout, self.causal = cfg.n_head, cfg.dropout, causal
        self.rotary = cfg.position == "rope"
        self.qk_norm = (rms_qk if cfg.qk_norm_type == "rms" else layer_qk) if cfg.qk_norm else None
        self.scale = (cfg.n_embd // cfg.n_head) ** -0.5
        if self.rotary:
            cos, sin = rotary_tables(cfg.context, cfg.n_embd // cfg.n_head)
            # derived from the config, so not saved in checkpoints (persistent=False)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_drop = dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                packed: Packed | None = None) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.qkv(x)  # (B, T, 3C): q | k | v, each C = heads x head_dim
        if cache is not None and T == 1:
            return self.resid_drop(self.proj(self._decode(qkv.view(B, 3, H, 1, D).unbind(1), cache, layer)))
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=2))
        if self.qk_norm:
            q, k = self.qk_norm(q), self.qk_norm(k)
        if packed is not None:
            if self.rotary:
                cos, sin = self.rope_cos[packed.positions].unsqueeze(1), self.rope_sin[packed.positions].unsqueeze(1)
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = attention(q, k, v, attn_mask=packed.additive_mask(attention_dtype(q)),
                          dropout_p=self.dropout if self.training else 0.0)
        elif cache is None:
            if self.rotary:
                cos, sin = self.rope_cos[:T], self.rope_sin[:T]
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            y = attention(q, k, v, is_causal=self.causal, dropout_p=self.dropout if self.training else 0.0)
        else:  # a chunk of several new tokens (a prompt): causal among them, after every cached slot
            if self.rotary:
                q, k = apply_rotary(q, *cache.rope), apply_rotary(k, *cache.rope)
            first = cache.length == 0
            kt, v_all = cache.append(layer, k, v)
            # the first chunk's keys are all there is; later ones read the cache (the fused kernel is
            # 3x slower on transposed keys, so they are copied back to (B, H, S, D) first)
            if not first:
                k, v = kt.transpose(-1, -2).contiguous(), v_all
            y = attention(q, k, v, attn_mask=cache.mask, is_causal=cache.causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))

    def _decode(self, qkv: tuple[torch.Tensor, ...], cache: KVCache, layer: int) -> torch.Tensor:
        """One new token per row, (B, heads, 1, head_dim) each of q, k, v -> (B, 1, C).

        Two small batched matmuls against the cache beat the fused attention kernel's set-up cost
        here, and with a single query (T = 1) no transposes or copies are needed.
        """
        q, k, v = qkv
        if self.qk_norm:
            q, k = self.qk_norm(q), self.qk_norm(k)
        if self.rotary:
            q, k = apply_rotary(q, *cache.rope), apply_rotary(k, *cache.rope)  # at each row's position
        kt, v = cache.append(layer, k, v)  # (B, H, D, S), (B, H, S, D)
        att = torch.matmul(q * self.scale, kt)  # (B, H, 1, S)
        if cache.mask is not None:  # -inf on pad slots
            att = att + cache.mask
        y = torch.matmul(torch.softmax(att, dim=-1), v)  # (B, H, 1, D), the memory order of (B, 1, C)
        return y.view(q.shape[0], 1, -1)


class GeluLinear(torch.autograd.Function):
    """``linear(gelu(h), weight, bias)`` that keeps ``h`` for the backward and not ``gelu(h)`` too: the
    backward recomputes the GELU (one elementwise pass over the block's widest activation) instead of
    holding a second tokens x 4C tensor per block - a fifth of a small GPT's activation memory
    (bench/RESULTS.md, issue 13, session 16). The same operators as autograd's own backward."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.gelu(h), weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_w = g.t().mm(F.gelu(h).reshape(-1, h.shape[-1])) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_h = torch.ops.aten.gelu_backward(grad.matmul(weight), h) if ctx.needs_input_grad[0] else None
        return grad_h, grad_w, grad_b


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.drop = dropout(cfg.dropout)
        self.act = relu2 if cfg.activation == "relu2" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self._recompute_gelu(h):
            return self.drop(GeluLinear.apply(h, self.proj.weight, self.proj.bias))
        return self.drop(self.proj(self.act(h)))

    def _recompute_gelu(self, h: torch.Tensor) -> bool:
        """Only on the plain eager path: torch.compile fuses this itself; autocast, an adapter or hooks
        on ``proj``, or a distributed tensor for its weight keep torch's own modules."""
        p = self.proj
        return (self.act is F.gelu and h.requires_grad and type(p) is nn.Linear and type(p.weight) is nn.Parameter
                and not p._forward_hooks and not p._forward_pre_hooks and not torch.is_autocast_enabled(h.device.type)
                and not torch.compiler.is_compiling())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, causal: bool = True):
        super().__init__()
        self.ln1, self.attn = norm(cfg), Attention(cfg, causal)
        self.ln2, self.mlp = norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                packed: Packed | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer, packed)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only LM (causal=True) or, with causal=False, a BERT-style bidirectional encoder."""

    def __init__(self, cfg: GPTConfig, vocab_size: int, causal: bool = True):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"model.n_embd={cfg.n_embd} must be divisible by model.n_head={cfg.n_head}")
        self.context = cfg.context
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.tok_emb = nn.Embedding(vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.context, cfg.n_embd) if cfg.position == "learned" else None
        self.drop = dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, causal) for _ in range(cfg.n_layer))
        self.ln_f = norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if cfg.logit_softcap:
            # on the output layer itself, so every caller of lm_head (a policy with a value head reads
            # features() and calls lm_head, trainwell/models/heads.py) gets the same capped logits
            self.lm_head.register_forward_hook(partial(softcap, cap=cfg.logit_softcap))
        self.apply(self._init)
        # GPT-2: scale residual projections by 1/sqrt(2 * layers) so the stream's variance
        # does not grow with depth (or start them at zero: each block begins as the identity).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                if cfg.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    @property
    def width(self) -> int:
        return self.tok_emb.weight.shape[1]

    accepts_packed = True  # forward(idx, packed=Packed(...)): trainwell/objectives/packing.py

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, packed: Packed | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, vocab) logits.

        With ``cache``: idx are the next T tokens of each row, written at the cache's next slots;
        their keys and values are stored and they attend to every earlier real token of their row.
        With ``packed``: each token sits at ``packed.positions`` and sees the keys ``packed.mask`` allows.
        """
        # the private body, not features(): FSDP2 wraps every public method (distributed/parallel.py,
        # model_methods) and would reshard the output layer's weight when features() returns
        return self.lm_head(self._features(idx, cache, packed))

    def features(self, idx: torch.Tensor, cache: KVCache | None = None, packed: Packed | None = None) -> torch.Tensor:
        """(B, T) token ids -> (B, T, width) final hidden states (after the last layer norm): what the
        output layer reads, and what a reward or value head reads instead (trainwell/models/heads.py)."""
        return self._features(idx, cache, packed)

    def _features(self, idx: torch.Tensor, cache: KVCache | None, packed: Packed | None = None) -> torch.Tensor:
        T = idx.shape[1]
        if packed is not None:
            positions = packed.positions
            if T and int(positions.max()) >= self.context:
                raise ValueError(f"a packed sequence reaches position {int(positions.max())}, beyond the model "
                                 f"context {self.context}")
        elif cache is None:
            if T > self.context:
                raise ValueError(f"sequence of {T} tokens is longer than the model context {self.context}")
            positions = torch.arange(T, device=idx.device)
        else:
            if cache.longest_row + T > self.context:
                raise ValueError(f"a row would hold {cache.longest_row + T} tokens, more than the model context "
                                 f"{self.context}; rebuild the cache from the rows' last tokens")
            cache.begin(T)
            positions = cache.positions  # (B, T), each row counted from its first real token
            attn = self.blocks[0].attn
            if attn.rotary:  # gathered once per chunk for every layer
                cache.rope = attn.rope_cos[positions].unsqueeze(1), attn.rope_sin[positions].unsqueeze(1)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, packed)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x)

    def new_cache(self, batch: int, capacity: int, pad: torch.Tensor) -> KVCache:
        """An empty cache for ``batch`` rows of at most ``capacity`` slots, rows left-padded by ``pad``."""
        w = self.tok_emb.weight
        return KVCache(layers=len(self.blocks), batch=batch, heads=self.n_head, head_dim=self.head_dim,
                       capacity=capacity, pad=pad, dtype=w.dtype, device=w.device)


def build_gpt(cfg: GPTConfig, *, vocab_size: int, context: int, **_: object) -> GPT:
    if cfg.context == 0:
        from dataclasses import replace

        cfg = replace(cfg, context=context)
    return GPT(cfg, vocab_size, causal=cfg.name != "encoder")


def gpt_flops_per_token(model: GPT) -> float:
    """Training FLOPs per token: 6 * non-embedding params + attention (PaLM appendix B)."""
    # parameters() yields a tied weight once; it then stands for the output matmul, while an
    # untied input embedding is a lookup (no FLOPs) and is left out.
    n = sum(p.numel() for p in model.parameters())
    if model.pos_emb is not None:
        n -= model.pos_emb.weight.numel()
    if model.lm_head.weight is not model.tok_emb.weight:
        n -= model.tok_emb.weight.numel()
    L = len(model.blocks)
    C, T = model.tok_emb.weight.shape[1], model.context
    return 6 * n + 12 * L * C * T  # attention scores and values, as PaLM and nanoGPT count
