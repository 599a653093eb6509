"""Muon for the transformer blocks' matrices, AdamW for the rest, as one torch Optimizer.

Muon (K. Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"; the
optimizer of the modded-nanogpt speedruns): SGD with Nesterov momentum whose update for each 2-D
weight is replaced by the nearest semi-orthogonal matrix, computed by a quintic Newton-Schulz
iteration (coefficients 3.4445, -4.7750, 2.0315, five steps), and scaled by sqrt(max(1, rows/cols)).
Embeddings, the output head, norm gains and biases are not hidden-layer matrices and stay on
AdamW (torch's fused kernel).

Why not ``torch.optim.Muon`` itself: it always runs the iteration in bf16, which on a CPU without
native bf16 (AVX2 only) is ~20x slower than fp32 - several seconds per step for this repo's
models. Here the iteration runs in bf16 where bf16 matmuls are native (CUDA, AMX / AVX-512-BF16
CPUs) and in fp32 elsewhere, batched over same-shaped matrices (one bmm per step of the iteration
instead of one matmul per matrix: the matrices are small, so call overhead matters on CPU).
Same update rule and momentum-buffer name as torch's Muon.

Under FSDP2 each rank gathers the block matrices' updates whole (Muon needs the whole matrix),
orthogonalises them as every other rank does and applies its own rows: exact, at the cost of one
all-gather of those updates per step and the iteration repeated on every rank.

One Optimizer object, so checkpoints (its state_dict: Muon's momentum and AdamW's moments),
distributed state dicts, loss scaling and zero_grad need nothing special. The AdamW part is a
``torch.optim.AdamW`` (:class:`trainwell.engine.eager_optim.AdamW`, without torch's compile wrappers)
that shares this optimizer's ``state`` and its param-group dicts.
"""

from __future__ import annotations

from typing import Any

import torch

from trainwell.engine.machine import cpu_flags
from trainwell.engine.eager_optim import AdamW, Eager

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def ns_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if name == "bf16" else torch.float32


def orthogonalize(g: torch.Tensor, steps: int, dtype: torch.dtype, eps: float = 1e-7) -> torch.Tensor:
    """(n, A, B) matrices -> (n, A, B), each pushed towards U V^T of its SVD (singular values ~1)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = g.shape[-2] > g.shape[-1]
    if tall:  # iterate on the wide side: the Gram matrix is min(A, B) square
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT  # (n, k, k)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b G + c G^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b G + c G^2) X
    return x.mT if tall else x


class MuonAdamW(Eager, torch.optim.Optimizer):
    def __init__(self, muon_params: list[torch.Tensor], splits: list[int], adam_groups: list[dict[str, Any]], *,
                 muon_lr: float, momentum: float, weight_decay: float, ns_steps: int, ns_dtype: torch.dtype,
                 lr_scale: float, **adamw: Any):
        """``splits[i]``: muon_params[i] is that many stacked matrices along dim 0 (fused q|k|v: 3),
        each orthogonalised on its own. ``lr_scale``: Muon's lr / AdamW's lr, kept through schedules."""
        self._adam = AdamW(adam_groups, **adamw) if adam_groups else None
        muon_group = {"params": muon_params, "use_muon": True, "splits": list(splits), "lr": muon_lr,
                      "lr_scale": lr_scale, "momentum": momentum, "nesterov": True,
                      "weight_decay": weight_decay, "ns_steps": ns_steps}
        self.ns_dtype = ns_dtype
        super().__init__([muon_group, *(self._adam.param_groups if self._adam else [])], defaults={})
        self._link()

    def _link(self) -> None:
        """Point the inner AdamW at this optimizer's state and its (non-Muon) group dicts."""
        if self._adam is None:
            return
        self._adam.param_groups = [g for g in self.param_groups if not g.get("use_muon")]
        self._adam.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # replaces self.state and the group dicts
        self._link()

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("use_muon"):
                self._muon_step(group)
        if self._adam is not None:
            self._adam.step()
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        # matrices of one shape are orthogonalised together: (n, A, B). Under FSDP2 a weight, its
        # gradient and its momentum are row shards (DTensors); the update is gathered whole (every rank
        # in the same parameter order), orthogonalised on every rank alike, and each rank keeps its rows.
        by_shape: dict[tuple[int, int], list[tuple[int, int, torch.Tensor]]] = {}
        updated: list[tuple[torch.Tensor, list[torch.Tensor | None]]] = []
        for p, parts in zip(group["params"], group["splits"]):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)  # B = mu B + g
            update = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf  # Nesterov: g + mu B
            if _is_dtensor(update):
                update = update.full_tensor()  # all-gather: (rows, cols) on every rank
            rows = p.shape[0] // parts
            for i in range(parts):
                by_shape.setdefault((rows, p.shape[1]), []).append((len(updated), i, update[i * rows:(i + 1) * rows]))
            updated.append((p, [None] * parts))
        for (rows, cols), items in by_shape.items():
            ortho = orthogonalize(torch.stack([u for _, _, u in items]), group["ns_steps"], self.ns_dtype)
            for (k, i, _), o in zip(items, ortho):
                updated[k][1][i] = o
        for w, pieces in updated:
            rows, cols = w.shape[0] // len(pieces), w.shape[1]
            scale = lr * max(1.0, rows / cols) ** 0.5
            o = torch.cat(pieces).to(w.dtype)  # type: ignore[arg-type]  (all parts filled above)
            if _is_dtensor(w):
                from torch.distributed.tensor import distribute_tensor

                o = distribute_tensor(o, w.device_mesh, w.placements, src_data_rank=None)  # this rank's rows
            if wd:
                w.mul_(1 - lr * wd)
            w.add_(o, alpha=-scale)


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def build_muon(model: torch.nn.Module, cfg: Any, device: torch.device) -> MuonAdamW:
    """Muon for the 2-D weights of the linear layers inside ``model.blocks``; AdamW for the rest."""
    from trainwell.errors import ConfigError

    muon, splits, seen = [], [], set()
    for name, module in model.named_modules():
        if name.startswith("blocks.") and isinstance(module, torch.nn.Linear) and module.weight.requires_grad:
            muon.append(module.weight)
            splits.append(3 if name.endswith(".qkv") else 1)  # q, k and v are separate matrices
            seen.add(id(module.weight))
    if not muon:
        raise ConfigError("optim.name = 'muon' needs a model with transformer blocks (model.blocks.*, e.g. "
                          "model.name = 'gpt'); use 'adamw' for this model.")
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return MuonAdamW(muon, splits, groups, muon_lr=cfg.muon_lr, momentum=cfg.muon_momentum,
                     weight_decay=cfg.muon_weight_decay, ns_steps=cfg.muon_ns_steps,
                     ns_dtype=ns_dtype(cfg.muon_ns_dtype, device),
                     lr_scale=cfg.muon_lr / cfg.lr if cfg.lr > 0 else 0.0,
                     lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                     fused=device.type in ("cpu", "cuda"))
