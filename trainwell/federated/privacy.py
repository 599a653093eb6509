"""Differential privacy of the released global models: Gaussian noise calibrated by an RDP accountant.

Mechanism (DP-FedAvg, McMahan et al. 2018, "Learning differentially private recurrent language
models"): each silo clips its update (new - global weights) to L2 norm C before it leaves the silo
(Flower's ``fixedclipping_mod``), the server averages the n sampled updates with equal weights and adds
N(0, (sigma C / n)^2) to every coordinate (Flower's ``DifferentialPrivacyClientSideFixedClipping``).
That is the Gaussian mechanism with noise multiplier sigma on the sum, once per round, with
*silo-level* neighbouring datasets (a whole silo added or removed), as Flower accounts it.

Accounting is Flower's ``RdpAccountant`` (Rényi DP, Mironov 2017), which runs Google's dp-accounting
library; Flower's fixed-clipping accountant supports only 'no-amplification' (it does not credit the
random choice of clients), so epsilon here is an upper bound when clients_per_round < silos.
"""

from __future__ import annotations

from typing import Any

from trainwell.errors import ConfigError


def accountant(delta: float, *, population: int) -> Any:
    try:
        from flwr.supercore.privacy_accounting import (
            NeighboringRelation,
            PrivacyConfig,
            SamplingMethod,
        )
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        return RdpAccountant(PrivacyConfig(target_delta=delta, population_size=population,
                                           neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                           sampling_method=SamplingMethod.NO_AMPLIFICATION))
    except ImportError:
        raise ConfigError("differential privacy needs the dp-accounting package: pip install "
                          "'trainwell[federated]'.") from None


def epsilon(sigma: float, delta: float, releases: int, *, population: int) -> float:
    """Epsilon at ``delta`` after ``releases`` Gaussian releases with noise multiplier ``sigma``."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    acc = accountant(delta, population=population)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=sigma, sample_size=population, population_size=population),
                releases)
    return acc.get_epsilon(delta)


def noise_multiplier(target: float, delta: float, releases: int, *, population: int) -> float:
    """The smallest noise multiplier whose ``releases`` rounds spend at most ``target`` epsilon (bisection
    on the accountant: epsilon falls monotonically as sigma grows)."""
    lo, hi = 1e-3, 1.0
    while epsilon(hi, delta, releases, population=population) > target:
        hi *= 2
        if hi > 1e6:
            raise ConfigError(f"federated.dp_epsilon = {target} cannot be reached in {releases} rounds at delta "
                              f"{delta}; raise dp_epsilon or dp_delta, or lower federated.rounds.")
    for _ in range(60):
        mid = (lo + hi) / 2
        if epsilon(mid, delta, releases, population=population) > target:
            lo = mid
        else:
            hi = mid
    return hi
