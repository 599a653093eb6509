"""Build the paradigm-specific parts of a run: model, data source, objective, evaluation.

A :class:`Job` is everything the loop needs beyond the optimizer. Paradigms differ only in
the builder that makes their Job (registered in ``JOBS`` by data source name); the loop
itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainwell.config.schema import Config
from trainwell.objectives import OBJECTIVES, LossOutput


@dataclass
class Job:
    model: torch.nn.Module  # the plain module: its state_dict is what checkpoints hold
    source: Any  # Stateful iterator of batches (dicts of CPU tensors)
    objective: Callable[[torch.nn.Module, dict[str, torch.Tensor]], LossOutput]
    eval_batches: list[dict[str, torch.Tensor]]
    units: str = "tokens"  # what LossOutput.units counts, for throughput
    flops_per_unit: float = 0.0  # training FLOPs per unit, for MFU
    batches_per_epoch: int = 0
    facts: dict[str, Any] = field(default_factory=dict)  # shown in the summary
    eval_extras: Callable[[dict[str, float]], dict[str, float]] = lambda m: {}
    sample: Callable[..., list[str]] | None = None  # (model, prompt, n, length, temperature, top_k, seed)
    encode: Callable[[str], list[int]] | None = None
    decode: Callable[[list[int]], str] | None = None


def text_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.data.text import bits_per_char, load_text
    from trainwell.data.windows import TokenWindows, eval_batches
    from trainwell.engine.generate import sample_text
    from trainwell.models.gpt import gpt_flops_per_token
    from trainwell.models.registry import build_model

    data = cfg.data
    corpus = load_text(data)
    model = build_model(cfg.model, vocab_size=corpus.vocab_size, context=data.context)
    if getattr(model, "context", data.context) < data.context:
        from trainwell.errors import ConfigError

        raise ConfigError(f"model.context = {model.context} is shorter than data.context = {data.context}; "
                          f"raise model.context or set it to 0 (= data.context).")
    model.to(device)
    source = TokenWindows(corpus.train, context=data.context, batch_size=cfg.train.batch_size,
                          seed=cfg.train.seed)
    evals = eval_batches(corpus.val, context=data.context, batch_size=cfg.train.batch_size,
                         batches=cfg.eval.batches)
    unigram = corpus.unigram_nats
    # the baseline a text model must beat: character frequencies alone
    facts = {"unigram_val_loss": round(unigram, 4), "unigram_val_bpc": round(bits_per_char(unigram), 4),
             "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": corpus.vocab_size,
             "data": corpus.info}

    def extras(m: dict[str, float]) -> dict[str, float]:
        return {"val/bpc": bits_per_char(m["val/loss"])}

    def encode(text: str) -> list[int]:
        return corpus.encode(text).tolist()

    def sample(model: torch.nn.Module, prompt: str, n: int, length: int, temperature: float,
               top_k: int, seed: int) -> list[str]:
        return sample_text(model, encode(prompt), corpus.decode, n=n, length=length,
                           temperature=temperature, top_k=top_k, seed=seed)

    return Job(model=model, source=source, objective=OBJECTIVES[cfg.objective.name],
               eval_batches=evals, units="tokens", flops_per_unit=gpt_flops_per_token(model),
               batches_per_epoch=source.batches_per_epoch(), facts=facts, eval_extras=extras,
               sample=sample, encode=encode, decode=corpus.decode)


JOBS: dict[str, Callable[[Config, torch.device], Job]] = {"text": text_job}


def build_job(cfg: Config, device: torch.device) -> Job:
    return JOBS[cfg.data.name](cfg, device)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(job: Job, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
    """Mean validation loss over the fixed eval batches (weighted by units), plus extras."""
    model = job.model
    was_training = model.training
    model.eval()
    total, units = 0.0, 0
    with torch.no_grad():
        for batch in job.eval_batches:
            with autocast():
                out = job.objective(model, to_device(batch, device))
            total += float(out.loss) * out.units
            units += out.units
    model.train(was_training)
    metrics = {"val/loss": total / max(units, 1)}
    metrics.update(job.eval_extras(metrics))
    return metrics


