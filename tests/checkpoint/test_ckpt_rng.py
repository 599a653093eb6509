"""RNGState restores every global stream so the next draws are identical."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from ckpt_helpers import assert_same

from trainwell import checkpoint as ckpt


def _draws() -> tuple[object, ...]:
    return (random.random(), random.gauss(0, 1), np.random.rand(2), np.random.randn(), torch.rand(3))


def test_rng_streams_continue_exactly_after_restore(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.gauss(0, 1), np.random.randn()  # leave cached gaussians in both states
    ckpt.save(tmp_path / "step-1", {"rng": ckpt.RNGState()}, step=1)
    a = _draws()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    assert not np.array_equal(_draws()[2], a[2])
    ckpt.load(tmp_path / "step-1", {"rng": ckpt.RNGState()})
    b = _draws()
    assert_same((a[0], a[1], a[3], a[4]), (b[0], b[1], b[3], b[4]))
    assert np.array_equal(a[2], b[2])


def test_rng_state_dict_is_checkpointable_shape() -> None:
    sd = ckpt.RNGState().state_dict()
    assert sd["torch_cpu"].dtype == torch.uint8
    assert len(sd["python"]["state"]) == 625 and len(sd["numpy"]["keys"]) == 624
    assert isinstance(sd["cuda"], list)
