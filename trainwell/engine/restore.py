"""Pick and check checkpoints before a run continues from one (either layout, any world size).

Every file of a checkpoint is hashed once: when it is picked (:func:`newest_valid`) or, for a
checkpoint named by the user, right before it is loaded; shapes are read from the safetensors
headers, and the load itself trusts that check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trainwell import checkpoint as ckpt
from trainwell.config import Config, trajectory_items
from trainwell.config.load import default_items, non_trajectory_keys
from trainwell.errors import CheckpointError


def newest_valid(root: Path, fix: str) -> Path:
    """The newest checkpoint under ``root`` that verifies; newer corrupt ones are reported on
    stderr and skipped. With none, the error ends with ``fix`` (what the user can do)."""
    path, skipped = ckpt.latest_valid(root)
    notes = "; ".join(f"{p.name} skipped: {why}" for p, why in skipped)
    if path is None:
        raise CheckpointError(f"no valid checkpoint in {root}{' (' + notes + ')' if notes else ''}; {fix}")
    if notes:
        print(f"warning: {notes}; using {path.name}", file=sys.stderr)
    return path


def check_same_config(path: Path, manifest: dict[str, Any], cfg: Config) -> None:
    """Refuse to resume with changed training settings (keys that change the trajectory).

    Keys that only affect evaluation, logging or checkpointing may change; so may keys an older
    trainwell counted in the trajectory and this one does not (e.g. ``data.eval_episodes``). A key
    added to trainwell after the checkpoint was written is taken at its default: a run resumes
    across an upgrade unless that key was set to something else.
    """
    saved = manifest.get("meta", {}).get("config", {})
    now = trajectory_items(cfg)
    free = non_trajectory_keys(cfg)
    defaults = default_items(cfg)
    missing = object()

    def was(k: str) -> Any:
        return saved[k] if k in saved else defaults.get(k, missing)

    diff = sorted(k for k in set(saved) | set(now) if k not in free and was(k) != now.get(k, missing))
    if diff:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in diff[:4])
        raise CheckpointError(f"checkpoint {path} was written by a different config: {shown}; "
                              f"to continue with changed settings branch a new run with "
                              f"`trainwell train RECIPE --from {path} --set ...`.")


def check_model_fits(path: Path, model: Any) -> None:
    """``model``: anything with a state_dict (the nn.Module, the adapters' Stateful, or under FSDP
    a module whose state_dict holds DTensors, whose .shape is the global shape)."""
    saved = ckpt.model_shapes(path)
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in saved:
            raise CheckpointError(f"checkpoint {path} has no weight '{key}' that this model needs; it was "
                                  f"written for a different model architecture.")
        if saved[key] != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint {path} holds '{key}' with shape {saved[key]} but the model built "
                f"from this config needs {tuple(tensor.shape)}; the model size or the data's vocabulary "
                f"differs from the run that wrote it.")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise CheckpointError(f"checkpoint {path} holds weights this model lacks (e.g. '{extra[0]}'); it was "
                              f"written for a different model architecture.")


def check_fits(path: Path, manifest: dict[str, Any], model_state: Any, cfg: Config, *, same_config: bool) -> None:
    """Everything checked before a checkpoint is loaded into a run: its config (for a resume), that
    a LoRA run is not handed a whole model, and that every weight has this model's name and shape."""
    if same_config:
        check_same_config(path, manifest, cfg)
    if getattr(model_state, "handle", None) is not None and not any("lora_" in k for k in ckpt.model_shapes(path)):
        raise CheckpointError(f"checkpoint {path} holds a whole model, but this run trains LoRA adapters; start "
                              f"from a pretrained model with --set train.init_from={path} instead of --from.")
    check_model_fits(path, model_state)


def does_not_fit(path: Path, e: Exception) -> CheckpointError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointError(f"checkpoint {path} does not fit this run ({first}); it was written for a "
                           f"different model, optimizer or data setup.")
