import numpy as np
import torch

from trainwell.data.windows import TokenWindows, eval_batches


def make(**kw):
    tokens = np.arange(5000) % 97
    return TokenWindows(tokens.astype(np.uint16), context=16, batch_size=4, seed=3, **kw)


def test_targets_are_inputs_shifted():
    b = next(make())
    assert b["input"].shape == (4, 16) and b["input"].dtype == torch.int64
    assert torch.equal(b["input"][:, 1:], b["target"][:, :-1])


def test_state_restores_exact_stream_across_epochs():
    a = make()
    n = a.batches_per_epoch() + 5  # cross an epoch boundary
    for _ in range(n):
        next(a)
    state = a.state_dict()
    expected = [next(a)["input"] for _ in range(10)]
    b = make()
    b.load_state_dict(state)
    got = [next(b)["input"] for _ in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))


def test_epochs_differ_and_cover_disjoint_windows():
    a = make()
    per = a.batches_per_epoch()
    first = torch.cat([next(a)["input"][:, 0] for _ in range(per)])
    second = torch.cat([next(a)["input"][:, 0] for _ in range(per)])
    assert not torch.equal(first, second)


def test_ranks_get_disjoint_slices():
    r0, r1 = make(rank=0, world_size=2), make(rank=1, world_size=2)
    x0, x1 = next(r0)["input"], next(r1)["input"]
    assert not any(torch.equal(a, b) for a in x0 for b in x1)


def test_eval_batches_fixed_and_cover_split():
    tokens = (np.arange(3000) % 50).astype(np.uint16)
    a = eval_batches(tokens, context=16, batch_size=4, batches=3)
    b = eval_batches(tokens, context=16, batch_size=4, batches=3)
    assert len(a) == 3 and all(torch.equal(x["input"], y["input"]) for x, y in zip(a, b))
