"""Build the paradigm-specific parts of a run: model, data source, objective, evaluation.

A :class:`Job` is everything the loop needs beyond the optimizer. Paradigms differ only in
the builder that makes their Job (registered in ``JOBS`` by data source name); the loop
itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

import numpy as np

from trainwell.config.schema import Config
from trainwell.errors import ConfigError
from trainwell.objectives import OBJECTIVES, LossOutput, classify_loss


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
    sample: Callable[..., list[str]] | None = None  # (model, prompt, n, length, temperature, top_k, seed, stop=())
    finish: Callable[[torch.nn.Module, Any], dict[str, Any]] | None = None  # (model, run_dir) -> summary extras
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None  # replaces eval_batches (RL episodes)
    train_metrics: Callable[[], dict[str, float]] | None = None  # extra values logged with train/loss
    total_steps: int | None = None  # optimizer steps implied by the data (RL: env steps), over train.steps
    best_metric: str = "val/loss"  # evaluation metric that picks the best checkpoint (keep_best)
    best_mode: str = "min"  # or "max" (RL: val/return)
    encode: Callable[[str], list[int]] | None = None
    decode: Callable[[list[int]], str] | None = None
    extra_evals: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)  # name -> batches


def text_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.data.text import bits_per_char, load_text
    from trainwell.data.windows import TokenWindows, eval_batches
    from trainwell.engine.generate import sample_text
    from trainwell.models.gpt import gpt_flops_per_token
    from trainwell.models.registry import build_model

    from trainwell.engine.transfer import ReplayWindows, pretraining_corpus, replay_split

    data = cfg.data
    # A pretrained character model keeps its vocabulary: its ids must mean the same characters.
    pre = pretraining_corpus(cfg.train.init_from, data.cache_dir) if cfg.train.init_from else None
    if pre is None and (data.replay_fraction > 0 or cfg.eval.retain):
        raise ConfigError("data.replay_fraction and eval.retain use the pretraining text of train.init_from; "
                          "set train.init_from to a checkpoint of a text run (or turn them off).")
    corpus = load_text(data, vocab=pre.vocab if pre is not None else None)
    masked = cfg.objective.name == "mlm"
    # MLM adds one id, the mask token, after the corpus vocabulary.
    model = build_model(cfg.model, vocab_size=corpus.vocab_size + masked, context=data.context)
    if getattr(model, "context", data.context) < data.context:
        raise ConfigError(f"model.context = {model.context} is shorter than data.context = {data.context}; "
                          f"raise model.context or set it to 0 (= data.context).")
    model.to(device)
    n_target, n_replay = replay_split(cfg.train.batch_size, data.replay_fraction)
    source: Any = TokenWindows(corpus.train, context=data.context, batch_size=n_target, seed=cfg.train.seed)
    if n_replay:
        source = ReplayWindows(source, TokenWindows(pre.train, context=data.context, batch_size=n_replay,
                                                    seed=cfg.train.seed + 1))
    evals = eval_batches(corpus.val, context=data.context, batch_size=cfg.train.batch_size,
                         batches=cfg.eval.batches)
    # forgetting: the loss on held-out pretraining text, next to the target loss
    extra = {"retain": eval_batches(pre.val, context=data.context, batch_size=cfg.train.batch_size,
                                    batches=cfg.eval.batches)} if cfg.eval.retain else {}
    facts: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()),
                             "vocab_size": corpus.vocab_size, "data": corpus.info}
    if masked:
        from trainwell.data.masking import MaskedWindows, mask_fixed

        o = cfg.objective
        kw = dict(mask_id=corpus.vocab_size, vocab_size=corpus.vocab_size, prob=o.mask_prob,
                  replace_mask=o.replace_mask, replace_random=o.replace_random)
        source = MaskedWindows(source, seed=cfg.train.seed, **kw)
        evals = mask_fixed(evals, seed=12345, **kw)
        extra = {k: mask_fixed(v, seed=12345, **kw) for k, v in extra.items()}
        # the baseline: always predict the most frequent training character
        top = int(np.bincount(corpus.train).argmax())
        facts["unigram_val_accuracy"] = round(float((corpus.val == top).mean()), 4)
        return Job(model=model, source=source, objective=OBJECTIVES["mlm"], eval_batches=evals,
                   units="tokens", flops_per_unit=gpt_flops_per_token(model),
                   batches_per_epoch=source.batches_per_epoch(), facts=facts, extra_evals=extra)
    if cfg.model.name != "gpt":
        raise ConfigError(f"objective 'lm' predicts the next token and needs model.name = 'gpt', not "
                          f"'{cfg.model.name}'.")

    # the baseline a text model must beat: character frequencies alone
    unigram = corpus.unigram_nats
    facts = {"unigram_val_loss": round(unigram, 4), "unigram_val_bpc": round(bits_per_char(unigram), 4),
             **facts}

    def extras(m: dict[str, float]) -> dict[str, float]:
        return {"val/bpc": bits_per_char(m["val/loss"])}

    def encode(text: str) -> list[int]:
        return corpus.encode(text).tolist()

    def sample(model: torch.nn.Module, prompt: str, n: int, length: int, temperature: float,
               top_k: int, seed: int, stop: tuple[str, ...] = ()) -> list[str]:
        return sample_text(model, encode(prompt), corpus.decode, n=n, length=length,
                           temperature=temperature, top_k=top_k, seed=seed, stop=stop)

    return Job(model=model, source=source, objective=OBJECTIVES[cfg.objective.name],
               eval_batches=evals, units="tokens", flops_per_unit=gpt_flops_per_token(model),
               batches_per_epoch=source.batches_per_epoch(), facts=facts, eval_extras=extras,
               sample=sample, encode=encode, decode=corpus.decode, extra_evals=extra)


def array_job(cfg: Config, device: torch.device) -> Job:
    """Supervised learning on in-memory samples: classification or regression."""
    from trainwell.data.arrays import load_arrays
    from trainwell.data.samples import ArrayBatches, fixed_batches
    from trainwell.engine.supervised import baseline, finish_classify, regress_extras
    from trainwell.models.registry import build_model

    if cfg.model.name == "hf" and not getattr(cfg.data, "text", ""):
        raise ConfigError("model.name = 'hf' needs a table with a text column (data.name = 'table', "
                          "data.text = COLUMN).")
    ds = load_arrays(cfg.data)
    from trainwell.engine.unsupervised import UNSUPERVISED

    if cfg.objective.name in UNSUPERVISED:
        return UNSUPERVISED[cfg.objective.name](cfg, device, ds)
    wanted = "classify" if ds.task == "classify" else "regress"
    if cfg.objective.name != wanted:
        raise ConfigError(f"the data is a {ds.task} task but objective.name = '{cfg.objective.name}'; "
                          f"set objective.name = '{wanted}'.")
    text_baseline: dict[str, float] = {}
    if ds.is_text or cfg.model.name == "hf":
        ds, text_baseline = tokenize_texts(cfg, ds)
    out = len(ds.classes) if ds.task == "classify" else 1
    model = build_model(cfg.model, feature_shape=ds.feature_shape, out_features=out).to(device)
    source = ArrayBatches(ds.x_train, ds.y_train, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    evals = fixed_batches(ds.x_test, ds.y_test, 256)
    facts = {"parameters": sum(p.numel() for p in model.parameters()), "data": ds.info,
             **(baseline(ds) if ds.raw_train is not None else text_baseline)}
    if ds.task == "classify":
        ls = cfg.objective.label_smoothing
        return Job(model=model, source=source, eval_batches=evals, units="samples",
                   objective=lambda m, b: classify_loss(m, b, label_smoothing=ls),
                   batches_per_epoch=source.batches_per_epoch(), facts=facts,
                   finish=lambda m, run_dir: finish_classify(m, ds, evals, run_dir))
    return Job(model=model, source=source, objective=OBJECTIVES["regress"], eval_batches=evals,
               units="samples", batches_per_epoch=source.batches_per_epoch(), facts=facts,
               eval_extras=lambda m: regress_extras(m, ds))


def tokenize_texts(cfg: Config, ds: Any) -> tuple[Any, dict[str, float]]:
    """Text samples -> (N, model.max_length) token ids with the Hugging Face model's own tokenizer;
    also the TF-IDF baseline on the raw texts."""
    from dataclasses import replace

    from trainwell.engine.supervised import tfidf_baseline
    from trainwell.models.hf import load_tokenizer

    if not ds.is_text or cfg.model.name != "hf":
        raise ConfigError("text samples (data.text) need model.name = 'hf' (a Hugging Face model folder), and "
                          "model.name = 'hf' needs a table with a text column (data.name = 'table', data.text = ...).")
    tok = load_tokenizer(cfg.model.path)

    def ids(texts: np.ndarray) -> np.ndarray:
        enc = tok(list(texts), max_length=cfg.model.max_length, padding="max_length", truncation=True)
        return np.asarray(enc["input_ids"], dtype=np.int64)  # (N, max_length)

    return (replace(ds, x_train=ids(ds.x_train), x_test=ids(ds.x_test), raw_train=None, raw_test=None),
            tfidf_baseline(ds))


def gym_job(cfg: Config, device: torch.device) -> Job:
    from trainwell.engine.rl import dqn_job, ppo_job  # imported late: gymnasium is slow to import

    return (dqn_job if cfg.data.name == "replay" else ppo_job)(cfg, device)


JOBS: dict[str, Callable[[Config, torch.device], Job]] = {
    "text": text_job, "gym": gym_job, "replay": gym_job, "sklearn": array_job, "image_folder": array_job, "table": array_job}


def build_job(cfg: Config, device: torch.device) -> Job:
    return JOBS[cfg.data.name](cfg, device)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(job: Job, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
    """Unit-weighted means of the loss and the objective's metrics over the eval batches."""
    if job.evaluate is not None:
        return job.evaluate(job.model)
    model = job.model
    was_training = model.training
    model.eval()
    metrics = mean_metrics(job, job.eval_batches, "val", device, autocast)
    metrics.update(job.eval_extras(metrics))
    for name, batches in job.extra_evals.items():  # e.g. retain/loss: forgetting of pretraining data
        metrics.update(mean_metrics(job, batches, name, device, autocast))
    model.train(was_training)
    return metrics


def mean_metrics(job: Job, batches: list[dict[str, torch.Tensor]], prefix: str, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
    sums: dict[str, float] = {}
    units = 0
    with torch.no_grad():
        for batch in batches:
            with autocast():
                out = job.objective(job.model, to_device(batch, device))
            for key, value in {"loss": out.loss, **out.metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * out.units
            units += out.units
    return {f"{prefix}/{k}": v / max(units, 1) for k, v in sums.items()}
