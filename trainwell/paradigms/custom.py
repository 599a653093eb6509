"""The user's own data, model and objective: import paths in a recipe, or Python objects.

In a recipe, ``data.name = "my_pkg.data:make"`` names a callable that gets the data section (its
extra keys pass through) and returns the training data, or a pair ``(train, eval)``. Data is a
map-style ``torch.utils.data.Dataset`` (trainwell batches it: shuffled per epoch from the seed,
sharded over ranks, resumable) or an iterator of dict batches with ``state_dict`` /
``load_state_dict``; evaluation data is a Dataset or a list of batches. A dataset may carry a
``facts`` dict (e.g. ``{"out_features": 10}``), passed to the model builder with ``feature_shape``.

From Python, :func:`object_builder` makes the same Job from objects handed to ``trainwell.fit``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainwell.config.imports import load_callable
from trainwell.config.schema import Config
from trainwell.data.dataset import collate, dataset_batches, fixed_dataset_batches, is_map_style
from trainwell.engine.job import Job
from trainwell.errors import ConfigError, DataError
from trainwell.models.registry import build_model
from trainwell.objectives import Objective, resolve, wrap_objective


def import_job(cfg: Config, device: torch.device) -> Job:
    """``data.name = "module:function"``: the user's data, with the recipe's model and objective."""
    made = load_callable(cfg.data.name, "data.name")(cfg.data)
    train, evals = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    where = f"data.name = {cfg.data.name!r}"
    source = as_source(train, cfg, where)
    model = build_model(cfg.model, **model_facts(train))
    return make_job(cfg, device, model, source, resolve(cfg.objective), eval_batches(evals, cfg, where))


def object_builder(model: torch.nn.Module, data: Any, objective: Callable[..., Any], eval_data: Any = None
                   ) -> Callable[[Config, torch.device], Job]:
    """The Job builder for objects passed to ``trainwell.fit`` (the Trainer calls it once)."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"trainwell.fit(model=...) needs a torch.nn.Module, got {type(model).__name__}.")
    if not callable(objective):
        raise ConfigError(f"trainwell.fit(objective=...) needs a function (model, batch) -> loss, got "
                          f"{type(objective).__name__}.")

    def build(cfg: Config, device: torch.device) -> Job:
        source = as_source(data, cfg, "trainwell.fit(data=...)")
        return make_job(cfg, device, model, source, wrap_objective(objective, "the objective given to trainwell.fit"),
                        eval_batches(eval_data, cfg, "trainwell.fit(eval_data=...)"))

    return build


def make_job(cfg: Config, device: torch.device, model: torch.nn.Module, source: Any, objective: Objective,
             evals: list[dict[str, torch.Tensor]]) -> Job:
    per_epoch = getattr(source, "batches_per_epoch", None)
    facts: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters()),
                             "model_type": f"{type(model).__module__}.{type(model).__qualname__}"}
    if hasattr(source, "n"):
        facts["train_samples"] = source.n
    return Job(model=model.to(device), source=source, objective=objective, eval_batches=evals, units="samples",
               batches_per_epoch=per_epoch() if callable(per_epoch) else 0, facts=facts)


def as_source(data: Any, cfg: Config, where: str) -> Any:
    """A map-style Dataset batched by trainwell, or the user's own stateful iterator of batches."""
    if is_map_style(data):
        return dataset_batches(data, batch_size=cfg.train.batch_size, seed=cfg.train.seed, where=where)
    if hasattr(data, "__next__"):
        if not (hasattr(data, "state_dict") and hasattr(data, "load_state_dict")):
            raise DataError(f"{where} is an iterator without state_dict()/load_state_dict(), so a resumed run "
                            f"could not continue where it stopped; pass a map-style Dataset (trainwell batches "
                            f"it) or give the iterator those two methods.")
        return data
    raise DataError(f"{where} is a {type(data).__name__}; pass a map-style torch Dataset (__getitem__ and "
                    f"__len__; not a DataLoader: trainwell does the batching) or a stateful iterator of batches.")


def eval_batches(data: Any, cfg: Config, where: str) -> list[dict[str, torch.Tensor]]:
    if data is None:
        return []
    if isinstance(data, list) and all(isinstance(b, dict) for b in data):
        return data
    if is_map_style(data):
        return fixed_dataset_batches(data, cfg.train.batch_size, where)
    raise DataError(f"{where} is a {type(data).__name__}; pass a map-style Dataset or a list of dict batches.")


def model_facts(data: Any) -> dict[str, Any]:
    """What a model builder learns from the data: the shape of one input, and the dataset's own facts."""
    facts = dict(getattr(data, "facts", {}) or {})
    if is_map_style(data) and len(data):
        first = collate(data, [0], "the dataset").get("input")
        if isinstance(first, torch.Tensor):
            facts.setdefault("feature_shape", tuple(first.shape[1:]))
    return facts
