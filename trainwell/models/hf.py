"""A Hugging Face Transformers encoder from a local folder (config.json + model.safetensors),
with a classification head: nothing is downloaded (``local_files_only``).

The encoder's own tokenizer (tokenizer.json / vocab.txt in the same folder) turns text into
ids in the data pipeline; the model gets (B, L) ids and derives the attention mask from the
padding id. Sentence embedding = mean of the token states over real tokens (what
sentence-transformers' MiniLM was trained with) or the first ([CLS]) token's state.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from trainwell.errors import ConfigError


def need_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("model.name = 'hf' needs the transformers package: pip install 'trainwell[adapters]'.") from None
    return transformers


def check_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.path = {path!r} is not a Hugging Face model folder (no config.json); pass a "
                          f"local folder written by save_pretrained — nothing is downloaded.")
    return folder


class HFClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, pad_id: int, classes: int, pooling: str, dropout: float):
        super().__init__()
        self.encoder, self.pad_id, self.pooling = encoder, pad_id, pooling
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, padded with pad_id -> (B, classes) logits."""
        mask = (ids != self.pad_id).long()
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(self.drop(pooled))


def load_tokenizer(path: str) -> Any:
    transformers = need_transformers()
    folder = check_folder(path)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.path = {path!r} has no usable tokenizer ({str(e).splitlines()[0][:200]}); the "
                          f"folder needs tokenizer.json or vocab.txt next to config.json.") from None


def build_hf(cfg: Any, *, out_features: int, **_: object) -> HFClassifier:
    transformers = need_transformers()
    folder = check_folder(cfg.path)
    if cfg.pretrained:
        encoder = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    else:  # same architecture, random weights: the control that shows what pretraining is worth
        encoder = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True))
    pad = encoder.config.pad_token_id
    return HFClassifier(encoder, 0 if pad is None else int(pad), out_features, cfg.pooling, cfg.dropout)


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM from a local folder as a plain ``(B, T) ids -> (B, T, vocab) logits``
    module, plus ``features`` / ``lm_head`` / ``width`` so reward and value heads fit on it
    (trainwell/models/heads.py).

    Training forwards pass no attention mask: trainwell right-pads training sequences, and in a causal
    model a real token never attends to the padding after it (positions count from the first token).
    Generation left-pads and passes the mask and positions (``forward(ids, cache)``).
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        config = lm.config
        self.context = int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1 << 30))

    @property
    def width(self) -> int:
        return int(self.lm.config.hidden_size)

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, width): the base model's last hidden state (after its final norm)."""
        return self.lm.base_model(input_ids=ids).last_hidden_state

    def forward(self, ids: torch.Tensor, cache: "HFCache | None" = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, vocab) logits; with ``cache``, the next T tokens of left-padded rows
        (the protocol of trainwell's GPT and KV cache, so engine/generate.py batches HF models too)."""
        if cache is None:
            return self.lm(input_ids=ids).logits
        T = ids.shape[1]
        slots = torch.arange(cache.length + T, device=ids.device)
        pad = cache.pad.to(ids.device)
        mask = (slots[None, :] >= pad[:, None]).long()  # (B, slots so far): 0 on left padding
        positions = (slots[None, cache.length:] - pad[:, None]).clamp_min(0)  # each row counts from its first token
        # transformers >= 5.2x names the argument and the output `cache`, earlier ones `past_key_values`
        name = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        out = self.lm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{name: cache.past})
        cache.past, cache.length = out[name], cache.length + T
        return out.logits

    def new_cache(self, batch: int, capacity: int, pad: torch.Tensor) -> "HFCache":
        return HFCache(pad)


class HFCache:
    """The Hugging Face model's own key/value cache plus the left padding of each row (see forward)."""

    def __init__(self, pad: torch.Tensor):
        self.pad, self.past, self.length = pad, None, 0

    @property
    def longest_row(self) -> int:
        return self.length - int(self.pad.min())

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.pad = self.pad[rows.cpu()]
        self.past.batch_select_indices(rows)


def build_hf_causal(cfg: Any, **_: object) -> HFCausalLM:
    transformers = need_transformers()
    folder = check_folder(cfg.path)
    if cfg.pretrained:
        lm = transformers.AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    else:
        lm = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(
            str(folder), local_files_only=True))
    lm.config.use_cache = False  # training forwards; generation passes use_cache itself (HFCausalLM.forward)
    if not cfg.keep_dropout:  # the modules' p: HF's attention passes attn_dropout.p to SDPA as well
        for m in lm.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    return HFCausalLM(lm)
