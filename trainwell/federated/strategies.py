"""The Flower strategy a run aggregates with, built from [federated], and its state for checkpoints.

Aggregation is Flower's (flwr.serverapp.strategy): FedAvg, FedProx, FedAdam / FedYogi / FedAdagrad,
FedAvgM, FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan, optionally wrapped in Flower's central-DP
wrapper with client-side clipping. Here are only the mapping from the config, and the strategies' own
state as plain tensors and numbers (FedAdam's moments, FedAvgM's momentum, the privacy ledger), because
Flower cannot checkpoint a strategy itself.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.errors import ConfigError

CLASSES = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi",
           "fedadagrad": "FedAdagrad", "fedavgm": "FedAvgM", "fedmedian": "FedMedian",
           "fedtrimmedavg": "FedTrimmedAvg", "krum": "Krum", "multikrum": "MultiKrum", "bulyan": "Bulyan"}
# set from federated.* (sampling) or fixed by trainwell's records: not strategy_options
MANAGED = ("fraction_train", "fraction_evaluate", "min_train_nodes", "min_evaluate_nodes",
           "min_available_nodes", "weighted_by_key", "arrayrecord_key", "configrecord_key",
           "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn")
# attributes that carry a strategy's state from one round to the next (Flower 1.42)
STATE_ATTRS = ("m_t", "v_t", "momentum_vector", "current_arrays", "clipping_norm")


def per_round(cfg: Config) -> int:
    f = cfg.federated
    return f.clients_per_round or f.silos


def uses_dp(cfg: Config) -> bool:
    return cfg.federated.dp_epsilon > 0 or cfg.federated.dp_noise > 0


def build(cfg: Config, *, evaluate_on_clients: bool) -> Any:
    """The strategy for ``cfg`` (DP-wrapped when asked); raises ConfigError on bad options."""
    from flwr.serverapp import strategy as flower

    f = cfg.federated
    if f.secure_aggregation:
        raise ConfigError(
            "federated.secure_aggregation is not available: Flower 1.42 implements SecAgg+ only in its legacy API "
            "(SecAggPlusWorkflow with legacy strategies and fit messages), not for the Message-API strategies "
            "trainwell's rounds use; set it to false (README: 'Secure aggregation').")
    cls = getattr(flower, CLASSES[f.strategy])
    params = inspect.signature(cls.__init__).parameters
    options = dict(f.strategy_options)
    for key in options:
        if key in MANAGED:
            raise ConfigError(f"federated.strategy_options.{key} is set by trainwell (federated.clients_per_round "
                              f"and the silos' records); remove it.")
        if key not in params:
            valid = [p for p in params if p not in MANAGED and p != "self"]
            raise ConfigError(f"federated.strategy_options.{key} is not an option of Flower's {cls.__name__}; its "
                              f"options are: {', '.join(valid) or 'none'}.")
    n = per_round(cfg)
    sampling = dict(fraction_train=n / f.silos, min_train_nodes=n, min_available_nodes=f.silos,
                    fraction_evaluate=1.0 if evaluate_on_clients else 0.0,
                    min_evaluate_nodes=n if evaluate_on_clients else 0)
    import logging

    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(logging.ERROR)  # "fraction_evaluate is 0": by design when the server scores the model
    try:
        strategy = cls(**sampling, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"federated.strategy_options for {cls.__name__}: {e}.") from None
    finally:
        flower_log.setLevel(level)
    if not uses_dp(cfg):
        return strategy
    if f.strategy not in ("fedavg", "fedprox"):
        raise ConfigError(f"differential privacy (federated.dp_epsilon / dp_noise) needs federated.strategy = "
                          f"'fedavg' or 'fedprox': Flower's privacy accounting requires FedAvg's aggregation, "
                          f"not {f.strategy!r}.")
    from trainwell.federated.privacy import accountant, noise_multiplier

    sigma = f.dp_noise or noise_multiplier(f.dp_epsilon, f.dp_delta, f.rounds, population=f.silos)
    return flower.DifferentialPrivacyClientSideFixedClipping(
        strategy, noise_multiplier=sigma, clipping_norm=f.dp_clip, num_sampled_clients=n,
        accountant=accountant(f.dp_delta, population=f.silos))


def chain(strategy: Any) -> list[Any]:
    """The strategy and every strategy it wraps, outermost first."""
    out = [strategy]
    while hasattr(out[-1], "strategy"):
        out.append(out[-1].strategy)
    return out


def inner(strategy: Any) -> Any:
    """The aggregating strategy under any wrappers (its sampling settings are the ones used)."""
    return chain(strategy)[-1]


class StrategyState:
    """Stateful view of a strategy chain's state (tensors for safetensors, the rest for JSON)."""

    def __init__(self, strategy: Any):
        self.strategy = strategy

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for depth, obj in enumerate(chain(self.strategy)):
            for attr in STATE_ATTRS:
                value = getattr(obj, attr, None)
                if value is not None:
                    out[f"{depth}.{attr}"] = _encode(value)
            acc = getattr(obj, "accountant", None)
            if acc is not None:
                out[f"{depth}.accountant"] = acc.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        objs = chain(self.strategy)
        for key, value in state.items():
            depth, attr = key.split(".", 1)
            obj = objs[int(depth)]
            if attr == "accountant":
                obj.accountant.load_state_dict(value)
            else:
                setattr(obj, attr, _decode(value))


def _encode(value: Any) -> dict[str, Any]:
    from flwr.app import ArrayRecord

    if isinstance(value, ArrayRecord):
        return {"kind": "record", "value": {k: torch.from_numpy(np.array(a.numpy())) for k, a in value.items()}}
    if isinstance(value, dict):
        return {"kind": "dict", "value": {k: torch.from_numpy(np.array(v)) for k, v in value.items()}}
    if isinstance(value, list):
        return {"kind": "list", "value": [torch.from_numpy(np.array(v)) for v in value]}
    if isinstance(value, (int, float)):
        return {"kind": "float", "value": float(value)}
    raise TypeError(f"cannot checkpoint strategy state of type {type(value).__name__}")


def _decode(item: dict[str, Any]) -> Any:
    from flwr.app import Array, ArrayRecord

    kind, value = item["kind"], item["value"]
    if kind == "record":
        return ArrayRecord({k: Array(v.numpy()) for k, v in value.items()})
    if kind == "dict":
        return {k: v.numpy() for k, v in value.items()}
    if kind == "list":
        return [v.numpy() for v in value]
    return value
