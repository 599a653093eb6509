"""Self-supervised learning on text: next-token (GPT) and masked-token (BERT-style) prediction.

Character-level: the Python standard library's own source or one text file (trainwell/data/text.py);
the windows source yields (input, target) token windows, the objective is cross-entropy on the
next token (lm) or on masked positions (mlm). With ``train.init_from`` the pretrained model's
vocabulary is kept, and its pretraining text feeds eval.retain and data.replay_fraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.data.text import bits_per_char, load_text
from trainwell.data.windows import TokenWindows, eval_batches
from trainwell.engine.generate import sample_text
from trainwell.engine.job import Job
from trainwell.errors import ConfigError, DataError
from trainwell.models.gpt import GPT, gpt_flops_per_token
from trainwell.models.registry import build_model, is_import_path
from trainwell.objectives import resolve
from trainwell.paradigms.transfer import ReplayWindows, pretraining_corpus, replay_split


def text_job(cfg: Config, device: torch.device) -> Job:
    data = cfg.data
    # A pretrained character model keeps its vocabulary: its ids must mean the same characters.
    pre = pretraining_corpus(cfg.train.init_from, data.cache_dir) if cfg.train.init_from else None
    if pre is None and (data.replay_fraction > 0 or cfg.eval.retain):
        raise ConfigError("data.replay_fraction and eval.retain use the pretraining text of train.init_from; "
                          "set train.init_from to a checkpoint of a text run (or turn them off).")
    corpus = load_text(data, vocab=pre.vocab if pre is not None else None)
    for split, tokens in (("training", corpus.train), ("validation", corpus.val)):
        if len(tokens) < data.context + 2:
            raise DataError(f"the {split} split has only {len(tokens)} characters, fewer than one sequence of "
                            f"data.context = {data.context}; lower data.context or use more text.")
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
        return Job(model=model, source=source, objective=resolve(cfg.objective), eval_batches=evals,
                   units="tokens", flops_per_unit=flops_per_token(model),
                   batches_per_epoch=source.batches_per_epoch(), facts=facts, extra_evals=extra)
    if cfg.model.name != "gpt" and not is_import_path(cfg.model.name):
        raise ConfigError(f"objective 'lm' predicts the next token and needs model.name = 'gpt' (or a "
                          f"'module:function' of your own), not '{cfg.model.name}'.")

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

    return Job(model=model, source=source, objective=resolve(cfg.objective),
               eval_batches=evals, units="tokens", flops_per_unit=flops_per_token(model),
               batches_per_epoch=source.batches_per_epoch(), facts=facts, eval_extras=extras,
               sample=sample, encode=encode, decode=corpus.decode, extra_evals=extra)


def flops_per_token(model: torch.nn.Module) -> float:
    """Training FLOPs per token of the shipped GPT (for MFU); 0 (not logged) for a model of the user's."""
    return gpt_flops_per_token(model) if isinstance(model, GPT) else 0.0
