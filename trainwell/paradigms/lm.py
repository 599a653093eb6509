"""The language model of the preference stages: its tokenizer, the model itself, its frozen copy.

trainwell's character GPT keeps the vocabulary of the text run its chain of ``train.init_from``
checkpoints starts from (paradigms/transfer.py); a Hugging Face causal LM folder brings its own
tokenizer (``model.name = "hf_causal"``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable

import torch

from trainwell.config.schema import Config
from trainwell.data.completions import Tokenizer
from trainwell.errors import ConfigError, DataError
from trainwell.models.registry import build_model


def make_tokenizer(cfg: Config, texts: Iterable[str]) -> tuple[Tokenizer, int]:
    """(tokenizer, vocabulary size): a Hugging Face folder's own, the character vocabulary of
    ``train.init_from``'s chain, or (a GPT trained from scratch) the characters of ``texts``."""
    if cfg.model.name == "hf_causal":
        from trainwell.models.hf import load_tokenizer

        hf = load_tokenizer(cfg.model.path)
        pad = hf.pad_token_id if hf.pad_token_id is not None else (hf.eos_token_id or 0)
        return Tokenizer(encode=lambda s: list(hf(s, add_special_tokens=False)["input_ids"]),
                         decode=lambda ids: hf.decode(list(ids), skip_special_tokens=True),
                         pad_id=int(pad), eos_id=hf.eos_token_id), len(hf)
    vocab = None
    if cfg.train.init_from:
        from trainwell.paradigms.transfer import root_vocabulary

        vocab = root_vocabulary(cfg.train.init_from, getattr(cfg.data, "cache_dir", ""))
        if vocab is None:
            raise ConfigError(f"train.init_from = {cfg.train.init_from} does not start from a character text run, "
                              f"so its vocabulary is unknown; start the chain from a `trainwell train default` "
                              f"checkpoint (or use model.name = 'hf_causal' with its tokenizer).")
    if vocab is None:
        from trainwell.data.text import build_vocab, codepoints

        vocab = build_vocab(codepoints("".join(texts)), 1)
    return char_tokenizer(vocab), len(vocab)


def char_tokenizer(vocab: list[str]) -> Tokenizer:
    from trainwell.data.text import UNK

    table = {ch: i for i, ch in enumerate(vocab)}
    unk = table.get(UNK)

    def encode(text: str) -> list[int]:
        try:
            return [table[ch] for ch in text]
        except KeyError:
            if unk is None:
                bad = next(ch for ch in text if ch not in table)
                raise DataError(f"character {bad!r} (in {text[:40]!r}...) is not in the model's vocabulary; "
                                f"remove it from the data or start from a model that knows it.") from None
            return [table.get(ch, unk) for ch in text]

    return Tokenizer(encode=encode, decode=lambda ids: "".join(vocab[int(i)] for i in ids), pad_id=0)


def build_lm(cfg: Config, vocab_size: int) -> torch.nn.Module:
    """The causal LM of the recipe (trainwell GPT, a Hugging Face folder, or an import path)."""
    d = cfg.data
    model = build_model(cfg.model, vocab_size=vocab_size, context=d.context)
    if getattr(model, "context", d.context) < d.context:
        raise ConfigError(f"the model's context ({model.context}) is shorter than data.context = {d.context}; "
                          f"lower data.context (or raise model.context).")
    return model


def needs_head(model: torch.nn.Module, what: str) -> None:
    if not all(hasattr(model, a) for a in ("features", "lm_head", "width")):
        raise ConfigError(f"{what} puts a head on the language model's hidden states, so the model needs "
                          f"features(ids), lm_head and width (trainwell's GPT and model.name = 'hf_causal' "
                          f"have them); {type(model).__name__} does not.")


def starting_copy(cfg: Config, body: torch.nn.Module, vocab_size: int) -> torch.nn.Module:
    """A frozen copy of the model the run starts from: rebuilt from train.init_from, or (a Hugging Face
    folder, a model that builds pretrained) a copy of the model as built."""
    if cfg.train.init_from:
        from trainwell.engine.prepare import init_weights

        ref = build_lm(cfg, vocab_size)
        init_weights(ref, Path(cfg.train.init_from))
    else:
        ref = copy.deepcopy(body)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def checkpoint_of(path: str, key: str) -> Path:
    """A checkpoint folder as given, or the newest valid checkpoint of a run directory."""
    from trainwell.engine.restore import newest_valid

    p = Path(path).expanduser()
    if (p / "manifest.json").is_file():
        return p
    if (p / "checkpoints").is_dir():
        return newest_valid(p / "checkpoints", f"{key} = {path} names a run without a valid checkpoint.")
    raise ConfigError(f"{key} = {path!r} is neither a checkpoint folder nor a run directory; pass "
                      f"RUN/checkpoints/step-N, RUN, or recipe:NAME.")


def load_stage_model(path: str, device: torch.device, key: str = "checkpoint") -> tuple[Config, torch.nn.Module, Tokenizer]:
    """(config, model, tokenizer) of a preference-stage run's checkpoint (or run directory): the run's own
    model (an LM, a reward model, a policy with a value head) rebuilt from its config.toml, with its
    starting weights and adapters, then the checkpoint; frozen, in eval mode, on ``device``. For a policy,
    ``getattr(model, "policy", model)`` is the language model."""
    from trainwell import checkpoint as ckpt
    from trainwell.config import load_config
    from trainwell.engine.prepare import prepare_model
    from trainwell.models.heads import PolicyValue, ScalarHead

    point = checkpoint_of(path, key)
    config_file = point.parents[1] / "config.toml"
    if not config_file.is_file():
        raise ConfigError(f"{key} = {path}: {point.parents[1]} has no config.toml, so its model cannot be rebuilt.")
    cfg = load_config(str(config_file))
    if cfg.model.name == "gpt" and not cfg.train.init_from:
        raise ConfigError(f"{key} = {path}: that GPT was trained from scratch, so its character vocabulary is not "
                          f"recorded; start preference stages from a text run (train.init_from).")
    tok, vocab_size = make_tokenizer(cfg, [])
    body = build_lm(cfg, vocab_size)
    kind = getattr(cfg.objective, "name", "")
    model = ScalarHead(body) if kind == "reward" else PolicyValue(body) if kind == "ppo_lm" else body
    adapted, _ = prepare_model(cfg, model, None)  # its own starting weights and adapters, then its training
    adapted.load_state_dict(ckpt.load_entry(point, "model"))
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return cfg, model, tok
