"""PPO's and GRPO's data source for language models: sample completions of the next prompts with the
current policy, score them, then yield minibatches of the rollout for a few epochs. To the loop it is
one more stateful iterator of batches (as trainwell/rl/rollout.py is for gymnasium environments).

What is algorithm-specific comes in as functions (trainwell/paradigms/preferences.py builds them):

    sample(policy, prompt_ids, generator) -> (completion ids per row, stopped per row)
    score(prompt_rows, completion_texts) -> ((N,) rewards, {reward name: (N,) values})
    annotate(model, rollout, generator) -> {key: tensor}: old log-probs, reference log-probs, values,
                                advantages (GRPO's group baseline, or PPO's KL-shaped rewards + GAE), or
                                online DPO's pairs (which may replace the rollout's rows); ``generator`` is
                                the sampling generator, for any draw the annotation makes (a noisy judge)

Rows of a rollout: each of ``prompts_per_rollout`` prompts ``group_size`` times, a prompt's
completions adjacent (GRPO's groups). Exact resume: the state holds the prompt position, the
sampling generator's state, the rollout itself and the position within its epochs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainwell.data.completions import pad_rows


class CompletionRollouts:
    def __init__(self, model: torch.nn.Module, *, policy: torch.nn.Module, prompts: list[list[int]],
                 rows: list[dict[str, Any]], decode: Callable[[list[int]], str], sample: Callable[..., Any],
                 score: Callable[..., Any], annotate: Callable[..., dict[str, Any]], prompts_per_rollout: int,
                 group_size: int, update_epochs: int, minibatch_size: int, seed: int, pad_id: int = 0,
                 turns: Callable[..., Any] | None = None):
        self.model, self.policy = model, policy
        self.prompts, self.rows, self.decode = prompts, rows, decode
        self.sample_fn, self.score_fn, self.annotate_fn = sample, score, annotate
        self.P, self.G, self.seed, self.pad_id = prompts_per_rollout, group_size, seed, pad_id
        self.turns = turns  # multi-turn episodes (trainwell/rl/turns.py, bound to its feedback), or None
        self.N = prompts_per_rollout * group_size  # completions per rollout
        self.mb = minibatch_size or self.N
        self.update_epochs = update_epochs
        self.per_epoch = max(1, self.N // self.mb)
        self.generator = torch.Generator().manual_seed(seed + 104_729)  # sampling only: never the training RNG
        self.prompt_epoch, self.prompt_index = 0, 0
        self.rollouts = 0
        self.cursor = self.updates_per_rollout()  # minibatches served from the current rollout
        self.buffer: dict[str, torch.Tensor] = {}
        self.stats: dict[str, float] = {}

    def updates_per_rollout(self) -> int:
        return self.update_epochs * self.per_epoch

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> "CompletionRollouts":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.cursor >= self.updates_per_rollout():
            self.collect()
        epoch, k = divmod(self.cursor, self.per_epoch)
        self.cursor += 1
        if self.mb >= self.N:  # the whole rollout (its rows, which an annotation may have rearranged)
            return trim(dict(self.buffer))
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rollouts) * 1_000_003 + epoch)
        order = torch.randperm(self.N, generator=g)[k * self.mb:(k + 1) * self.mb]
        return trim({key: value[order] for key, value in self.buffer.items()})

    def next_prompts(self) -> list[int]:
        """Indices of the next P prompts: each epoch visits them in an order drawn from (seed, epoch)."""
        out: list[int] = []
        n = len(self.prompts)
        while len(out) < self.P:
            if self.prompt_index >= n:
                self.prompt_epoch, self.prompt_index = self.prompt_epoch + 1, 0
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.prompt_epoch)
            order = torch.randperm(n, generator=g)
            take = order[self.prompt_index:self.prompt_index + self.P - len(out)].tolist()
            out += take
            self.prompt_index += len(take)
        return out

    @torch.no_grad()
    def collect(self) -> None:
        was = self.model.training
        self.model.eval()  # no dropout while sampling and scoring: old log-probs are those of the sampler
        try:
            idx = [i for i in self.next_prompts() for _ in range(self.G)]
            prompts = [self.prompts[i] for i in idx]
            rows = [self.rows[i] for i in idx]
            masks = None
            if self.turns is None:
                completions, stopped = self.sample_fn(self.policy, prompts, self.generator)
                texts = [self.decode(c) for c in completions]
            else:  # one row per episode: its attempts and the feedback between them; the last attempt is scored
                ep = self.turns(self.sample_fn, self.policy, prompts, rows, self.generator)
                completions, stopped, texts, masks = ep.ids, ep.stopped, ep.last, ep.masks
            rewards, parts = self.score_fn(rows, texts)
            seqs = pad_rows([p + c for p, c in zip(prompts, completions)], [len(p) for p in prompts], self.pad_id,
                            masks)
            buffer = {"ids": seqs.ids, "mask": seqs.mask, "lengths": seqs.lengths, "reward": rewards.float()}
            extra = self.annotate_fn(self.model, buffer, self.generator)
            stats = extra.pop("stats", {})
            buffer.update(extra)
        finally:
            self.model.train(was)
        self.buffer = {k: v.detach().cpu() for k, v in buffer.items()}
        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float32)
        groups = rewards.float().view(-1, self.G)
        self.stats = {"reward": float(rewards.mean()),
                      "reward_std": float(groups.std(1).mean()) if self.G > 1 else float(rewards.std()),
                      "completions/mean_length": float(lengths.mean()),
                      "completions/clipped_ratio": 1.0 - sum(stopped) / len(stopped),
                      **{f"rewards/{k}": float(v.mean()) for k, v in parts.items()}, **stats}
        if self.turns is not None:
            self.stats["turns/mean"] = float(sum(ep.turns) / len(ep.turns))
        if self.G > 1:
            self.stats["frac_reward_zero_std"] = float((groups.std(1) == 0).float().mean())
        self.rollouts += 1
        self.cursor = 0

    def rollout_stats(self) -> dict[str, float]:
        """The last rollout's reward, length and KL numbers, logged with train/loss (TRL's names)."""
        return {f"train/{k}": v for k, v in self.stats.items()} | {"train/rollouts": float(self.rollouts)}

    # ------------------------------------------------------------------ Stateful
    def state_dict(self) -> dict[str, Any]:
        return {"rollouts": self.rollouts, "cursor": self.cursor, "prompt_epoch": self.prompt_epoch,
                "prompt_index": self.prompt_index, "generator": self.generator.get_state(),
                "buffer": {k: v.clone() for k, v in self.buffer.items()}, "stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts, self.cursor = int(state["rollouts"]), int(state["cursor"])
        self.prompt_epoch, self.prompt_index = int(state["prompt_epoch"]), int(state["prompt_index"])
        self.generator.set_state(state["generator"].clone())
        self.buffer = {k: v.clone() for k, v in state["buffer"].items()}
        self.stats = {k: float(v) for k, v in state["stats"].items()}


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut a minibatch's token columns to its longest row: (N, T) tensors to L, (N, T-1) ones to L - 1."""
    T = batch["ids"].shape[1]
    L = int(batch["lengths"].max())
    out = {}
    for k, v in batch.items():
        if v.dim() >= 2 and v.shape[1] == T:
            v = v[:, :L]
        elif v.dim() >= 2 and v.shape[1] == T - 1:
            v = v[:, :L - 1]
        out[k] = v
    return out
