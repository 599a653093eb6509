"""Learning from preferences as Jobs: SFT, a reward model, DPO, PPO and GRPO on a causal LM.

    data.name   objective   source                                    model
    sft         sft         rows of prompt + completion               the LM
    pairs       reward      rows of prompt + chosen / rejected        the LM + a scalar head (models/heads.py)
    pairs       dpo         the same (+ reference log-probs)          the LM
    prompts     ppo_lm      completions sampled by the policy itself  the LM + a value head
    prompts     grpo        G completions per prompt, scored          the LM
    prompts     online_dpo  the same, best and worst of each group    the LM

The LM is trainwell's character GPT (started from ``train.init_from``: a text run, or an earlier
stage of this chain; its vocabulary is the pretrained one) or a local Hugging Face causal LM
(``model.name = "hf_causal"``, with its own tokenizer). The losses are pure functions in
trainwell/objectives (sft, reward, dpo, grpo, ppo_lm); the rollout source is trainwell/rl/completions.py.

The frozen reference (DPO, PPO, GRPO) is a copy of the starting model (built again from
``train.init_from``, so a resumed run gets the very same one), DPO's log-probs of every pair under it
computed once (then the copy is dropped), or - with LoRA - the same model with its adapters switched off.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable

import torch

from trainwell.config.schema import Config
from trainwell.data.completions import (ROW, RowBatches, Sequences, Tokenizer, encode_completions, fixed_batches,
                                        load_rows, pad_rows, prompt_ids)
from trainwell.engine.generate import generate, sample_text
from trainwell.engine.job import Job
from trainwell.engine.precision import Precision
from trainwell.errors import ConfigError
from trainwell.objectives.packing import pair_logps
from trainwell.objectives.sequence import sequence_logps, shifted, token_logps
from trainwell.paradigms.lm import build_lm, make_tokenizer, needs_head, starting_copy

EVAL_SEED = 12_345  # evaluation samples use their own generator: the same prompts and noise every time


def read(cfg: Config) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], Tokenizer, int]:
    train, held, info = load_rows(cfg.data)
    columns = [c for c in ("prompt", "completion", "chosen", "rejected") if c in train[0]]
    tok, vocab_size = make_tokenizer(cfg, (r[c] for rows in (train, held) for r in rows for c in columns))
    return train, held, info, tok, vocab_size


def facts_of(model: torch.nn.Module, info: dict[str, Any], vocab_size: int, **extra: Any) -> dict[str, Any]:
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": vocab_size, "data": info,
            **extra}


# --------------------------------------------------------------------------- sampling


def sampler(cfg: Config, tok: Tokenizer, autocast: Callable[[], Any]) -> Callable[..., tuple[list[list[int]], list[bool]]]:
    """(policy, prompt ids, generator) -> (completion ids, stopped) with the KV-cache sampler."""
    d = cfg.data

    def sample(policy: torch.nn.Module, prompts: list[list[int]], generator: torch.Generator):
        with autocast():
            out = generate(policy, prompts, max_new_tokens=d.max_new_tokens, temperature=d.temperature,
                           top_k=d.top_k, stop=tuple(d.stop), stop_ids=() if tok.eos_id is None else (tok.eos_id,),
                           decode=tok.decode, generator=generator, pad_id=tok.pad_id)
        return out.ids, out.stopped

    return sample


def cut_text(tok: Tokenizer, ids: list[int], stop: Iterable[str]) -> str:
    """A completion's text, cut before the first stop string."""
    text = tok.decode(ids)
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def text_sampler(tok: Tokenizer) -> Callable[..., list[str]]:
    """Job.sample: ``trainwell generate`` and the samples at the end of a run."""
    def sample(model: torch.nn.Module, prompt: str, n: int, length: int, temperature: float, top_k: int,
               seed: int, stop: tuple[str, ...] = ()) -> list[str]:
        lm = getattr(model, "policy", model)
        return sample_text(lm, tok.encode(prompt), tok.decode, n=n, length=length, temperature=temperature,
                           top_k=top_k, seed=seed, stop=stop)
    return sample


def completion_samples(cfg: Config, rows: list[dict[str, Any]], tok: Tokenizer,
                       autocast: Callable[[], Any]) -> Callable[[torch.nn.Module], list[str]] | None:
    """Job.eval_samples for a policy: completions of the first held-out prompts, written at every evaluation."""
    d = cfg.data
    rows = rows[:d.eval_samples]
    if not rows:
        return None
    sample = sampler(cfg, tok, autocast)
    prompts = [tok.encode(r["prompt"])[-(d.context - d.max_new_tokens):] or [tok.pad_id] for r in rows]

    def samples(model: torch.nn.Module) -> list[str]:
        lm = getattr(model, "policy", model)
        was = lm.training
        lm.eval()
        try:
            ids, _ = sample(lm, prompts, torch.Generator().manual_seed(EVAL_SEED))
        finally:
            lm.train(was)
        return [f"{r['prompt']}\u2502{cut_text(tok, c, d.stop)}" for r, c in zip(rows, ids)]

    return samples


# --------------------------------------------------------------------------- SFT


def sft_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.objectives.sft import sft_loss

    d = cfg.data
    if cfg.objective.name != "sft":
        raise ConfigError(f"data.name = 'sft' trains with objective.name = 'sft', not '{cfg.objective.name}'.")
    train, held, info, tok, vocab_size = read(cfg)
    model = build_lm(cfg, vocab_size).to(device)
    train_seq, cut = encode_completions(train, "completion", tok, d.context)
    eval_seq, _ = encode_completions(held, "completion", tok, d.context)
    source = RowBatches(len(train), cfg.train.batch_size, cfg.train.seed, rows_of(train_seq))
    autocast = Precision(cfg.train.precision, device).autocast
    return Job(model=model, source=source, objective=sft_loss,
               eval_batches=fixed_batches(len(held), cfg.train.batch_size, rows_of(eval_seq), cfg.eval.batches),
               units="tokens", batches_per_epoch=source.batches_per_epoch(),
               facts=facts_of(model, info, vocab_size, completions_cut=cut), sample=text_sampler(tok),
               encode=tok.encode, decode=tok.decode, eval_samples=completion_samples(cfg, held, tok, autocast))


def rows_of(seq: Sequences) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    def collate(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        ids, mask, lengths = seq.take(idx)
        return {"ids": ids, "mask": mask, "lengths": lengths}
    return collate


# --------------------------------------------------------------------------- pairs: reward model, DPO


def pairs_of(chosen: Sequences, rejected: Sequences,
             ref: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
             ) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Batches of B pairs as 2B rows: the chosen completions, then the rejected ones (one forward for both);
    ``ref()``: the precomputed reference log-probs of every (chosen, rejected) row."""
    def collate(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        width = int(max(chosen.lengths[idx].max(), rejected.lengths[idx].max()))
        c, r = chosen.take(idx, width), rejected.take(idx, width)
        batch = {k: torch.cat([a, b]) for k, a, b in zip(("ids", "mask", "lengths"), c, r)}
        if ref is not None:
            ref_c, ref_r = ref()
            batch["ref_logp"] = torch.cat([ref_c[idx], ref_r[idx]])
        return batch
    return collate


class Once:
    """A value computed on first use, then kept (the function and what it holds are dropped)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn: Callable[[], Any] | None = fn
        self.value: Any = None

    def __call__(self) -> Any:
        if self.fn is not None:
            self.value, self.fn = self.fn(), None
        return self.value


@torch.no_grad()
def all_logps(model: torch.nn.Module, seq: Sequences, device: torch.device, autocast: Callable[[], Any],
              batch: int = 64) -> torch.Tensor:
    """(N,) summed completion log-probs of every row of ``seq`` under ``model`` (the precomputed reference).

    The heap is trimmed after every batch: each batch's activations are freed, but the small results
    kept in between pin the heap, and over thousands of rows its free space grew the process by ~300
    MiB (bench/vs_trl.py measured a peak RSS of 1.7 GiB for a 0.8M-parameter DPO run; ~0.5 GiB now)."""
    from trainwell.diagnostics import malloc

    out = []
    for s in range(0, len(seq.lengths), batch):
        ids, mask, _ = seq.take(torch.arange(s, min(s + batch, len(seq.lengths))))
        with autocast():
            out.append(sequence_logps(model, ids.to(device), mask.to(device)).float().cpu())
        malloc.trim()
    return torch.cat(out) if out else torch.zeros(0)


def pairs_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.models.heads import ScalarHead
    from trainwell.objectives.dpo import dpo_loss
    from trainwell.objectives.reward import reward_loss

    d, o = cfg.data, cfg.objective
    if o.name not in ("reward", "dpo"):
        raise ConfigError(f"data.name = 'pairs' trains a reward model (objective.name = 'reward') or a policy by "
                          f"DPO (objective.name = 'dpo'), not '{o.name}'.")
    train, held, info, tok, vocab_size = read(cfg)
    body = build_lm(cfg, vocab_size)
    fix = "shorten it or raise data.context"
    seqs = {}
    for split, rows in (("train", train), ("eval", held)):
        prompts = prompt_ids(rows, tok, d.context - 1, fix)
        seqs[split] = tuple(encode_completions(rows, col, tok, d.context, prompts) for col in ("chosen", "rejected"))
    cut = sum(n for _, n in seqs["train"])
    (tc, _), (tr, _) = seqs["train"]
    (ec, _), (er, _) = seqs["eval"]
    autocast = Precision(cfg.train.precision, device).autocast
    extra: dict[str, Any] = {}
    if o.name == "reward":
        needs_head(body, "a reward model")
        model = ScalarHead(body).to(device)
        objective = partial(reward_loss, center_coef=o.center_coef)
        refs: tuple[Any, Any] = (None, None)
        best, mode, sample = "val/accuracy", "max", None
        samples = reward_samples(held[:d.eval_samples], ec, er, device, autocast)
    else:
        model = body.to(device)
        refs, reference = dpo_reference(cfg, model, vocab_size, device, autocast, (tc, tr), (ec, er))
        objective = partial(dpo_loss, beta=o.beta, loss_type=o.loss_type, label_smoothing=o.label_smoothing,
                            reference=reference)
        best, mode = "val/loss", "min"
        samples, sample = completion_samples(cfg, held, tok, autocast), text_sampler(tok)
        extra["reference"] = o.reference
    source = RowBatches(len(train), cfg.train.batch_size, cfg.train.seed, pairs_of(tc, tr, refs[0]), what="pairs")
    evals = fixed_batches(len(held), cfg.train.batch_size, pairs_of(ec, er, refs[1]), cfg.eval.batches)
    # units: the rows' tokens, which the objectives report as LossOutput.processed (as SFT's do)
    return Job(model=model, source=source, objective=objective, eval_batches=evals, units="tokens",
               batches_per_epoch=source.batches_per_epoch(), best_metric=best, best_mode=mode,
               facts=facts_of(model, info, vocab_size, completions_cut=cut, **extra), sample=sample,
               encode=tok.encode, decode=tok.decode, eval_samples=samples)


def dpo_reference(cfg: Config, model: torch.nn.Module, vocab_size: int, device: torch.device,
                  autocast: Callable[[], Any], train: tuple[Sequences, Sequences], held: tuple[Sequences, Sequences]
                  ) -> tuple[tuple[Any, Any], Callable[[dict[str, torch.Tensor]], torch.Tensor] | None]:
    """((train, eval) precomputed reference log-probs as callables, or Nones; the reference for the objective
    or None). The training pairs' log-probs are computed at the first batch (not when ``trainwell eval`` or
    ``generate`` build the job), the held-out ones now."""
    how = cfg.objective.reference
    if how == "adapters":
        if cfg.adapter.method == "none":
            raise ConfigError("objective.reference = 'adapters' needs adapter.method = 'lora' or 'qlora' (the base "
                              "without its adapters is the reference); use 'precompute' or 'model' instead.")
        from trainwell.adapters.lora import adapters_off

        def off(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            with adapters_off(model):
                return pair_logps(model, batch)
        return (None, None), off
    ref = starting_copy(cfg, model, vocab_size).to(device)
    if how == "model":
        return (None, None), lambda batch: pair_logps(ref, batch)
    # precomputed: the copy is dropped once both are computed, only its log-probs stay
    held_ref = tuple(all_logps(ref, s, device, autocast) for s in held)
    train_ref = Once(lambda: tuple(all_logps(ref, s, device, autocast) for s in train))
    return (train_ref, lambda: held_ref), None


def reward_samples(rows: list[dict[str, Any]], chosen: Sequences, rejected: Sequences, device: torch.device,
                   autocast: Callable[[], Any]) -> Callable[[torch.nn.Module], list[str]] | None:
    """Job.eval_samples for a reward model: its scores of the held-out pairs ``rows`` (the first of the eval set)."""
    from trainwell.objectives.reward import last_token_scores

    n = len(rows)
    if not n:
        return None

    @torch.no_grad()
    def samples(model: torch.nn.Module) -> list[str]:
        idx = torch.arange(n)
        out = []
        with autocast():
            scores = []
            for seq in (chosen, rejected):
                ids, _, lengths = seq.take(idx)
                scores.append(last_token_scores(model, ids.to(device), lengths.to(device)))
        rc, rr = scores
        for i in range(n):
            row = rows[i]
            out.append(f"{row['prompt']}\u2502 chosen   r = {float(rc[i]):+.3f}: {row['chosen']!r}\n"
                       f"{' ' * len(row['prompt'].splitlines()[-1] if row['prompt'] else '')}  rejected r = "
                       f"{float(rr[i]):+.3f}: {row['rejected']!r}")
        return out

    return samples


# --------------------------------------------------------------------------- prompts: PPO, GRPO


def prompts_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.models.heads import PolicyValue
    from trainwell.objectives.dpo import dpo_loss
    from trainwell.objectives.grpo import grpo_loss
    from trainwell.objectives.ppo_lm import ppo_lm_loss
    from trainwell.paradigms.rewards import build_scorer, reward_function
    from trainwell.rl.completions import CompletionRollouts

    d, o = cfg.data, cfg.objective
    if o.name not in ("ppo_lm", "grpo", "online_dpo"):
        raise ConfigError(f"data.name = 'prompts' trains with objective.name = 'grpo', 'ppo_lm' or 'online_dpo', "
                          f"not '{o.name}'.")
    if o.name in ("grpo", "online_dpo") and d.group_size < 2:
        raise ConfigError(f"{'GRPO' if o.name == 'grpo' else 'Online DPO'} compares the completions of each prompt: "
                          f"data.group_size must be at least 2.")
    if o.name == "online_dpo":
        if 0 < d.minibatch_size < d.prompts_per_rollout * d.group_size:
            raise ConfigError("online DPO trains on each rollout's pairs as one batch: set data.minibatch_size = 0 "
                              "(and data.prompts_per_rollout to the pairs per step).")
        if o.label_temperature > 0 and d.group_size != 2:
            raise ConfigError(f"objective.label_temperature draws a label for a pair: it needs data.group_size = 2, "
                              f"not {d.group_size}.")
    if d.max_new_tokens >= d.context:
        raise ConfigError(f"data.max_new_tokens = {d.max_new_tokens} leaves no room for a prompt in data.context = "
                          f"{d.context}; lower it or raise data.context.")
    train, held, info, tok, vocab_size = read(cfg)
    body = build_lm(cfg, vocab_size)
    if o.name == "ppo_lm":
        needs_head(body, "PPO's value head")
        model: torch.nn.Module = PolicyValue(body).to(device)
    else:
        model = body.to(device)
    fix = "shorten it, lower data.max_new_tokens or raise data.context"
    prompts = prompt_ids(train, tok, d.context - d.max_new_tokens, fix)
    eval_rows = held[:d.eval_prompts]
    eval_prompts = prompt_ids(eval_rows, tok, d.context - d.max_new_tokens, fix)
    autocast = Precision(cfg.train.precision, device).autocast
    kl_coef = o.kl_coef if o.name == "ppo_lm" else o.beta
    how = o.reference if o.reference != "auto" else (
        "none" if kl_coef == 0 else "adapters" if cfg.adapter.method != "none" else "model")
    if how == "none" and o.name == "online_dpo":
        raise ConfigError("objective.reference = 'none': DPO's implicit reward is measured against the reference; "
                          "use 'model' or, with LoRA, 'adapters'.")
    if how == "none" and kl_coef > 0:
        raise ConfigError(f"objective.reference = 'none' but the KL coefficient is {kl_coef}; the KL term needs a "
                          f"reference ('model' or, with LoRA, 'adapters').")
    ref_logps = reference_logps(cfg, how, body, vocab_size, device)
    score = build_scorer(o, device)
    extra_eval = [reward_function(n, "data.eval_rewards") for n in d.eval_rewards]
    sample = sampler(cfg, tok, autocast)
    temperature = d.temperature if d.temperature > 0 else 1.0
    if o.name == "grpo":
        annotate = partial(grpo_annotate, ref_logps=ref_logps, autocast=autocast, group_size=d.group_size,
                           scale=o.scale_rewards, temperature=temperature,
                           reuse=d.update_epochs > 1 or 0 < d.minibatch_size < d.prompts_per_rollout * d.group_size,
                           kl_in_reward=o.beta if o.kl_in_reward else 0.0)
        objective = partial(grpo_loss, clip=o.clip, clip_high=o.clip_high, beta=0.0 if o.kl_in_reward else o.beta,
                            loss_type=o.loss_type, temperature=temperature)
    elif o.name == "online_dpo":
        annotate = partial(online_dpo_annotate, ref_logps=ref_logps, autocast=autocast, group_size=d.group_size,
                           label_temperature=o.label_temperature)
        objective = partial(dpo_loss, beta=o.beta, loss_type=o.loss_type, label_smoothing=o.label_smoothing)
    else:
        annotate = partial(ppo_annotate, ref_logps=ref_logps, autocast=autocast, kl_coef=o.kl_coef,
                           estimator=o.kl_estimator, gamma=o.gamma, lam=o.lam, whiten_adv=o.whiten_advantages,
                           temperature=temperature)
        objective = partial(ppo_lm_loss, clip=o.clip, vf_coef=o.vf_coef, clip_value=o.clip_value,
                            temperature=temperature)
    turns = episode_runner(cfg, tok) if d.turns > 1 else None
    source = CompletionRollouts(model, policy=body, prompts=prompts, rows=train,
                                decode=lambda ids: cut_text(tok, ids, d.stop), sample=sample, score=score,
                                annotate=annotate, prompts_per_rollout=d.prompts_per_rollout,
                                group_size=d.group_size, update_epochs=d.update_epochs,
                                minibatch_size=d.minibatch_size, seed=cfg.train.seed, pad_id=tok.pad_id, turns=turns)
    evaluation = PolicyEvaluation(cfg, body, tok, eval_rows, eval_prompts, sample, score, extra_eval, ref_logps,
                                  autocast, temperature, device)
    return Job(model=model, source=source, objective=objective, eval_batches=[], units="tokens",
               batches_per_epoch=source.updates_per_rollout(), evaluate=evaluation, train_metrics=source.rollout_stats,
               best_metric="val/reward", best_mode="max", sample=text_sampler(tok), encode=tok.encode,
               decode=tok.decode, eval_samples=evaluation.samples if d.eval_samples else None,
               facts=facts_of(model, info, vocab_size, reference=how,
                              rewards=[n for n, _ in score.fns] + [n for n, _ in extra_eval]))


def episode_runner(cfg: Config, tok: Tokenizer) -> Callable[..., Any]:
    """Multi-turn episodes (trainwell/rl/turns.py) with the sandbox's feedback on the visible tests."""
    from trainwell.rl.turns import episodes
    from trainwell.sandbox.reward import execution_feedback

    d = cfg.data

    def feedback(rows: list[dict[str, Any]], texts: list[str]) -> list[str | None]:
        columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", ROW)}
        return execution_feedback([r["prompt"] for r in rows], texts, **columns)

    def run(sample: Any, policy: torch.nn.Module, prompts: list[list[int]], rows: list[dict[str, Any]],
            generator: torch.Generator) -> Any:
        return episodes(sample, policy, prompts, rows, generator, decode=lambda ids: cut_text(tok, ids, d.stop),
                        encode=tok.encode, feedback=feedback, turns=d.turns, context=d.context,
                        budget=d.max_new_tokens)
    return run


def reference_logps(cfg: Config, how: str, body: torch.nn.Module, vocab_size: int, device: torch.device
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``(inputs, targets) -> (B, T) log-probs under the reference``, or None without one."""
    if how == "none":
        return None
    if how == "adapters":
        if cfg.adapter.method == "none":
            raise ConfigError("objective.reference = 'adapters' needs adapter.method = 'lora' or 'qlora'; use "
                              "'model' instead.")
        from trainwell.adapters.lora import adapters_off

        def off(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            with adapters_off(body):
                return token_logps(body(inputs), targets)
        return off
    ref = starting_copy(cfg, body, vocab_size).to(device)
    return lambda inputs, targets: token_logps(ref(inputs), targets)


def sequence_kl(logp: torch.Tensor, ref: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(B,) k1 summed over each completion's tokens: log pi(y) / pi_ref(y), the sequence-level KL estimate."""
    return ((logp - ref) * m).sum(-1)


def grpo_annotate(model: torch.nn.Module, buf: dict[str, torch.Tensor], generator: Any = None, *, ref_logps: Any,
                  autocast: Any,
                  group_size: int, scale: str, temperature: float, reuse: bool, kl_in_reward: float = 0.0
                  ) -> dict[str, Any]:
    """GRPO's rollout extras: group advantages; old log-probs if the rollout is reused; reference log-probs.
    ``kl_in_reward`` > 0: the advantages are those of r - kl_in_reward * (sequence KL estimate), and no
    reference log-probs go to the loss (the KL is paid in the reward instead)."""
    from trainwell.objectives.grpo import group_advantages

    device = next(model.parameters()).device
    ids, mask = buf["ids"].to(device), buf["mask"].to(device)
    inputs, targets, m = shifted(ids, mask)
    out: dict[str, Any] = {}
    reward = buf["reward"]
    # no forward of the policy here unless the rollout is reused or the KL is in the reward: the loss computes
    # the sampling policy's log-probs anyway, and logs the KL (TRL's "kl": the per-token k3 mean)
    with autocast():
        logp = token_logps(model(inputs) / temperature, targets) if reuse or kl_in_reward else None
        ref = ref_logps(inputs, targets) if ref_logps is not None else None
    if reuse:
        out["old_logp"] = logp
    if kl_in_reward and ref is not None:
        seq_kl = sequence_kl(logp.float(), ref.float(), m).cpu()
        reward = reward - kl_in_reward * seq_kl
        out["stats"] = {"kl": float(seq_kl.mean()), "non_score_reward": float(-kl_in_reward * seq_kl.mean())}
    elif ref is not None:
        out["ref_logp"] = ref
    out["adv"] = group_advantages(reward, group_size, scale)
    return out


def ppo_annotate(model: torch.nn.Module, buf: dict[str, torch.Tensor], generator: Any = None, *, ref_logps: Any,
                 autocast: Any,
                 kl_coef: float, estimator: str, gamma: float, lam: float, whiten_adv: bool,
                 temperature: float) -> dict[str, Any]:
    """PPO's rollout extras: old log-probs and values, KL-penalised token rewards, GAE advantages and returns."""
    from trainwell.objectives.ppo_lm import kl_per_token, token_gae, token_rewards, whiten

    device = next(model.parameters()).device
    ids, mask = buf["ids"].to(device), buf["mask"].to(device)
    inputs, targets, m = shifted(ids, mask)
    with autocast():
        logits, values = model(inputs)
        logp = token_logps(logits / temperature, targets)
        ref = ref_logps(inputs, targets) if ref_logps is not None else logp
    values = values.float() * m
    kl = kl_per_token(logp, ref, estimator) * m
    rewards = token_rewards(kl, m, buf["reward"].to(device), kl_coef)
    adv, returns = token_gae(rewards, values, m, gamma, lam)
    if whiten_adv:
        adv = whiten(adv, m)
    seq_kl = sequence_kl(logp, ref, m)
    return {"old_logp": logp, "values": values, "adv": adv, "returns": returns,
            "stats": {"kl": float(seq_kl.mean()), "non_score_reward": float((-kl_coef * kl).sum(-1).mean())}}


def online_dpo_annotate(model: torch.nn.Module, buf: dict[str, torch.Tensor], generator: torch.Generator, *,
                        ref_logps: Any, autocast: Any, group_size: int, label_temperature: float) -> dict[str, Any]:
    """Online DPO's pairs from a rollout of P prompts x G completions: per group the completion with the
    highest reward is chosen and the lowest rejected (``label_temperature`` t > 0, G = 2: a noisy judge, the
    first is chosen with probability sigmoid((r_1 - r_2) / t), drawn from the sampling ``generator``, so a
    resumed run draws the same labels). The rollout's rows become the P chosen then the P rejected ones
    (dpo_loss's layout) with their reference log-probs; a group whose rewards are all equal gives no
    preference (pair_weight 0)."""
    reward = buf["reward"].float().view(-1, group_size)
    P = reward.shape[0]
    base = torch.arange(P) * group_size
    if label_temperature > 0:
        first = torch.rand(P, generator=generator) < torch.sigmoid((reward[:, 0] - reward[:, 1]) / label_temperature)
        chosen, rejected = base + (~first).long(), base + first.long()
    else:
        chosen, rejected = base + reward.argmax(1), base + reward.argmin(1)
    weight = (reward.max(1).values != reward.min(1).values).float()
    order = torch.cat([chosen, rejected])
    rows = {k: buf[k][order] for k in ("ids", "mask", "lengths", "reward")}
    device = next(model.parameters()).device
    inputs, targets, m = shifted(rows["ids"].to(device), rows["mask"].to(device))
    with autocast():
        ref = (ref_logps(inputs, targets).float() * m).sum(-1)
    gap = (rows["reward"][:P] - rows["reward"][P:]).float()
    untied = weight.sum().clamp_min(1)
    return {**rows, "ref_logp": ref, "pair_weight": weight,
            "stats": {"pairs/untied": float(weight.mean()),
                      "pairs/label_agrees": float(((gap > 0).float() * weight).sum() / untied),
                      "pairs/reward_gap": float((gap * weight).sum() / untied)}}


class PolicyEvaluation:
    """Job.evaluate for PPO/GRPO: one completion per held-out prompt (a fixed generator), scored by the
    training rewards and data.eval_rewards; KL(pi || pi_ref) of those completions when there is a reference."""

    def __init__(self, cfg: Config, policy: torch.nn.Module, tok: Tokenizer, rows: list[dict[str, Any]],
                 prompts: list[list[int]], sample: Any, score: Any, extra: list[tuple[str, Any]], ref_logps: Any,
                 autocast: Any, temperature: float, device: torch.device):
        self.cfg, self.policy, self.tok, self.rows, self.prompts = cfg, policy, tok, rows, prompts
        self.sample, self.score, self.extra, self.ref_logps = sample, score, extra, ref_logps
        self.autocast, self.temperature, self.device = autocast, temperature, device
        self.last: list[str] = []

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        d, policy = self.cfg.data, self.policy
        was = model.training
        model.eval()
        try:
            ids, _ = self.sample(policy, self.prompts, torch.Generator().manual_seed(EVAL_SEED))
            texts = [cut_text(self.tok, c, d.stop) for c in ids]
            total, parts = self.score(self.rows, texts)
            prompts = [r["prompt"] for r in self.rows]
            columns = {k: [r.get(k) for r in self.rows] for k in self.rows[0] if k not in ("prompt", ROW)}
            for name, fn in self.extra:
                parts[name] = torch.tensor([float("nan") if v is None else float(v)
                                            for v in fn(prompts=prompts, completions=texts, **columns)])
            out = {"val/reward": float(total.mean()), "val/reward_std": float(total.std()),
                   "val/completions/mean_length": float(sum(map(len, ids)) / len(ids)),
                   **{f"val/rewards/{k}": float(v.nanmean()) for k, v in parts.items()}}
            if self.ref_logps is not None:
                seqs = pad_rows([p + c for p, c in zip(self.prompts, ids)], [len(p) for p in self.prompts],
                                self.tok.pad_id)
                inputs, targets, m = shifted(seqs.ids.to(self.device), seqs.mask.to(self.device))
                with self.autocast():
                    logp = token_logps(policy(inputs) / self.temperature, targets)
                    ref = self.ref_logps(inputs, targets)
                out["val/kl"] = float(((logp - ref) * m).sum(-1).mean())
        finally:
            model.train(was)
        self.last = [f"{r['prompt']}\u2502{t}\n    reward {float(total[i]):+.3f}"
                     + "".join(f", {k} {float(v[i]):+.3f}" for k, v in parts.items())
                     for i, (r, t) in enumerate(zip(self.rows[:d.eval_samples], texts))]
        return out

    def samples(self, model: torch.nn.Module) -> list[str]:
        return self.last


__all__ = ["build_lm", "make_tokenizer", "pairs_job", "prompts_job", "sft_job"]
