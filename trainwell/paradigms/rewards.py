"""Rewards for PPO and GRPO on language models: Python functions (the way TRL's ``reward_funcs`` work)
and trained reward models, combined into one weighted score per completion.

A reward function is called as ``f(prompts=[...], completions=[...], **columns)`` - ``columns`` are
the prompt rows' other columns, one list each - and returns one float per completion (None: does not
apply to that one; it then counts 0). A reward model is a checkpoint of a ``reward`` run (or its run
directory): it reads ``prompt + completion`` with its own tokenizer and scores the last token.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from trainwell.config.imports import is_import_path, load_callable
from trainwell.data.code_tasks import code_valid
from trainwell.data.completions import ROW
from trainwell.errors import ConfigError

RewardFn = Callable[..., list]
SHIPPED: dict[str, RewardFn] = {"code_valid": code_valid}


def reward_function(name: str, key: str) -> tuple[str, RewardFn]:
    """(label for the logs, function) for a shipped name or a 'module:function'."""
    if name in SHIPPED:
        return name, SHIPPED[name]
    if is_import_path(name):
        fn = load_callable(name, key)
        return name.rsplit(":", 1)[1], fn
    raise ConfigError(f"{key}: {name!r} is neither a shipped reward ({', '.join(SHIPPED)}) nor a "
                      f"'module:function' of your own.")


def load_reward_model(path: str, device: torch.device, key: str = "objective.reward_model") -> RewardFn:
    """A reward function that scores with the reward model in ``path`` (frozen, on ``device``)."""
    from trainwell.paradigms.lm import load_stage_model

    cfg, model, tok = load_stage_model(path, device, key)
    if getattr(cfg.objective, "name", "") != "reward":
        raise ConfigError(f"{key} = {path} was trained with objective '{cfg.objective.name}', not a reward model; "
                          f"train one with the code_reward recipe (objective.name = 'reward').")
    context = min(int(cfg.data.context), int(getattr(model, "context", cfg.data.context)))

    @torch.no_grad()
    def score(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        seqs = [tok.encode(p + c)[-context:] or [tok.pad_id] for p, c in zip(prompts, completions)]
        out: list[float] = []
        for s in range(0, len(seqs), 64):
            chunk = seqs[s:s + 64]
            lengths = torch.tensor([len(x) for x in chunk])
            ids = torch.full((len(chunk), int(lengths.max())), tok.pad_id, dtype=torch.long)
            for i, x in enumerate(chunk):
                ids[i, :len(x)] = torch.tensor(x)
            scores = model(ids.to(device))
            out += scores[torch.arange(len(chunk)), (lengths - 1).to(device)].float().cpu().tolist()
        return out

    score.__name__ = "model"
    return score


class Scorer:
    """The weighted sum of a run's rewards: ``(rows, completions) -> ((N,) total, {name: (N,) values})``."""

    def __init__(self, fns: list[tuple[str, RewardFn]], weights: list[float]):
        if not fns:
            raise ConfigError("PPO and GRPO need a reward: set objective.reward_model (a reward-model run) and/or "
                              "objective.reward_funcs (e.g. ['code_valid'] or ['my_pkg.rewards:fn']).")
        if weights and len(weights) != len(fns):
            raise ConfigError(f"objective.reward_weights has {len(weights)} values for {len(fns)} rewards "
                              f"({', '.join(n for n, _ in fns)}); give one each or none.")
        self.fns, self.weights = fns, weights or [1.0] * len(fns)

    def parts(self, rows: list[dict[str, Any]], completions: list[str]) -> dict[str, torch.Tensor]:
        prompts = [r["prompt"] for r in rows]
        columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", ROW)} if rows else {}
        out = {}
        for name, fn in self.fns:
            values = fn(prompts=prompts, completions=completions, **columns)
            if not isinstance(values, (list, tuple)) or len(values) != len(completions):
                raise ConfigError(f"the reward {name!r} returned {type(values).__name__} of length "
                                  f"{len(values) if hasattr(values, '__len__') else '?'} for {len(completions)} "
                                  f"completions; return one float (or None) per completion.")
            out[name] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
        return out

    def __call__(self, rows: list[dict[str, Any]], completions: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = self.parts(rows, completions)
        total = sum(w * torch.nan_to_num(v, nan=0.0) for w, v in zip(self.weights, parts.values()))
        return total, parts  # type: ignore[return-value]


def build_scorer(o: Any, device: torch.device) -> Scorer:
    fns: list[tuple[str, RewardFn]] = []
    if o.reward_model:
        fns.append(("model", load_reward_model(o.reward_model, device)))
    fns += [reward_function(n, "objective.reward_funcs") for n in o.reward_funcs]
    return Scorer(fns, list(o.reward_weights))
