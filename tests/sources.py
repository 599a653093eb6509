"""Checks shared by the tests of Stateful data sources."""

from __future__ import annotations

from typing import Any

import torch


def assert_source_resumes_exactly(cfg: Any, before: int, after: int) -> dict[str, torch.Tensor]:
    """Draw ``before`` batches from the job's source, save its state, draw ``after`` more; a fresh
    job restored from that state (same weights, same global RNG) must yield identical batches.
    Returns the last batch drawn before the state was saved."""
    from trainwell.paradigms import build_job

    torch.manual_seed(0)
    job = build_job(cfg, torch.device("cpu"))
    for _ in range(before):
        last = next(job.source)
    state = job.source.state_dict()
    rng = torch.get_rng_state()
    expected = [next(job.source) for _ in range(after)]
    torch.manual_seed(0)
    other = build_job(cfg, torch.device("cpu"))
    other.model.load_state_dict(job.model.state_dict())
    other.source.load_state_dict(state)
    torch.set_rng_state(rng)
    got = [next(other.source) for _ in range(after)]
    for a, b in zip(expected, got):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    return last
