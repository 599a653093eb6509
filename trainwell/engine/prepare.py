"""The model as trained: pretrained weights (train.init_from), then the adapter method.

Applied from outside the plain model, to every paradigm alike (full fine-tuning, freezing,
LoRA, QLoRA live in trainwell/adapters).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainwell import checkpoint as ckpt
from trainwell.adapters import Adapted, adapt
from trainwell.config.schema import Config
from trainwell.errors import CheckpointError, ConfigError


def prepare_model(cfg: Config, model: torch.nn.Module, compute_dtype: torch.dtype | None) -> tuple[Adapted, list[str]]:
    """Pretrained weights (train.init_from), then the adapter method; returns notes to print."""
    notes = []
    if cfg.train.init_from:
        check_same_function(cfg, Path(cfg.train.init_from))
        notes.append(init_weights(model, Path(cfg.train.init_from)))
    if cfg.adapter.method != "none" and not cfg.train.init_from:
        notes.append(f"note: adapter.method = '{cfg.adapter.method}' without train.init_from adapts a randomly "
                     f"initialised base")
    adapted = adapt(model, cfg.adapter, compute_dtype=compute_dtype)
    f = adapted.facts()
    notes.append(f"adapter {f['adapter']}: training {f['trainable_parameters']:,} of {f['total_parameters']:,} "
                 f"parameters ({100 * f['trainable_share']:.2f}%)")
    return adapted, notes


# GPT options that change what the weights compute but not their names or shapes, so init_weights
# cannot see a mismatch: weights trained with one setting would silently compute something else
FUNCTION_KEYS = ("activation", "norm", "qk_norm", "qk_norm_type", "logit_softcap", "position")


def check_same_function(cfg: Config, path: Path) -> None:
    """Refuse a pretrained GPT checkpoint whose model options differ from this run's in FUNCTION_KEYS
    (or that had an untied output layer where this run ties it: one of the two would be lost)."""
    try:
        saved = ckpt.read_manifest(path).get("meta", {}).get("config", {})
    except CheckpointError:
        return  # init_weights says what is wrong with the checkpoint itself
    if cfg.model.name != "gpt" or saved.get("model.name") != "gpt":
        return
    # a checkpoint written before an option existed was trained with its default
    default = type(cfg.model)()
    differ = [k for k in FUNCTION_KEYS if saved.get(f"model.{k}", getattr(default, k)) != getattr(cfg.model, k)
              and not (k == "qk_norm_type" and not cfg.model.qk_norm)]  # the type matters only with QK-norm
    if saved.get("model.tie_embeddings", default.tie_embeddings) is False and cfg.model.tie_embeddings:
        differ.append("tie_embeddings")
    if differ:
        theirs = ", ".join(f"model.{k} = {saved.get(f'model.{k}', getattr(default, k))!r}" for k in differ)
        fix = " ".join(f"--set model.{k}={_toml(saved.get(f'model.{k}', getattr(default, k)))}" for k in differ)
        raise ConfigError(f"train.init_from = {path} was trained with {theirs}, which this run sets otherwise; its "
                          f"weights would compute a different function. Use the same options ({fix}) or start "
                          f"from a checkpoint trained with these.")


def _toml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def init_weights(model: torch.nn.Module, path: Path) -> str:
    """Copy every weight of a checkpoint whose name and shape match (transfer learning).

    ``load_entry`` checks the sha256 of the files it reads (the manifest, state and model file),
    so the checkpoint is hashed once here, not verified first and hashed again.
    """
    saved = ckpt.load_entry(path, "model")
    own = model.state_dict()
    matched = match_weights(saved, own)
    if not matched:
        raise CheckpointError(f"train.init_from = {path}: no weight of that checkpoint matches this model's "
                              f"names and shapes; it holds a different architecture.")
    model.load_state_dict(matched, strict=False)
    used = {id(v) for v in matched.values()}
    skipped = sorted(k for k, v in saved.items() if id(v) not in used)
    fresh = sorted(set(own) - set(matched))
    note = f"initialised {len(matched)}/{len(own)} weights from {path}"
    if skipped:
        note += f"; skipped {len(skipped)} that do not fit (e.g. {skipped[0]})"
    if fresh:
        note += f"; {len(fresh)} start fresh (e.g. {fresh[0]})"
    return note


def match_weights(saved: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``saved`` weights renamed to ``own``'s names where name and shape fit.

    Names match as they are, or across one wrapping prefix on either side: a reward model or a
    policy with a value head holds the language model under ``body.`` (trainwell/models/heads.py),
    so a plain LM checkpoint loads into it and its ``body.*`` weights load into a plain LM. The
    reading that matches the most weights wins.
    """
    def fits(pairs: dict[str, str]) -> dict[str, torch.Tensor]:  # own name -> saved name
        return {k: saved[s] for k, s in pairs.items() if s in saved and tuple(saved[s].shape) == tuple(own[k].shape)}

    readings = [fits({k: k for k in own})]
    for prefix in {k.split(".", 1)[0] + "." for k in own if "." in k}:  # own = prefix + saved
        readings.append(fits({k: k[len(prefix):] for k in own if k.startswith(prefix)}))
    for prefix in {k.split(".", 1)[0] + "." for k in saved if "." in k}:  # saved = prefix + own
        readings.append(fits({k: prefix + k for k in own}))
    return max(readings, key=len)
