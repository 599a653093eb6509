"""Registry of jobs that learn from samples without using their labels for training.

``array_job`` hands the loaded dataset to the builder registered here under the objective's
name; labels are used only to score the result (e.g. adjusted Rand index).
"""

from __future__ import annotations

from typing import Any, Callable

# objective name -> builder(cfg, device, dataset) -> Job
UNSUPERVISED: dict[str, Callable[..., Any]] = {}
from trainwell.engine.density import density_job; UNSUPERVISED["density"] = density_job  # noqa: E402,E702
from trainwell.engine.cluster import simclr_job; UNSUPERVISED["simclr"] = simclr_job  # noqa: E402,E702
