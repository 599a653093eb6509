"""Single-process checks of the distributed pieces: data split, config errors, sharded format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainwell.checkpoint.sharded import shard_rows
from trainwell.config import load_config
from trainwell.data.samples import ArrayBatches
from trainwell.data.windows import TokenWindows
from trainwell.distributed.parallel import shard_source
from trainwell.distributed.world import World
from trainwell.errors import CheckpointError, ConfigError


def ranks_of(make, world: int) -> list:
    """One source per rank, sharded exactly as the loop does it (global batch 4)."""
    cfg = load_config("default", ["train.batch_size=4"])
    out = []
    for r in range(world):
        src = make()
        shard_source(src, cfg, World(rank=r, size=world))
        out.append(src)
    return out


def test_token_windows_ranks_take_slices_of_the_one_process_batch():
    tokens = np.arange(2000) % 97
    make = lambda: TokenWindows(tokens, context=8, batch_size=4, seed=3)  # noqa: E731
    (one,), two = ranks_of(make, 1), ranks_of(make, 2)
    for _ in range(3 * one.batches_per_epoch() + 1):  # across epoch boundaries
        ref = next(one)["input"]
        parts = [next(s)["input"] for s in two]
        assert all(p.shape[0] == 2 for p in parts)
        assert torch.equal(torch.cat(parts), ref)


@pytest.mark.parametrize("n, world", [(11, 2), (9, 4)])
def test_array_batches_cover_every_sample_once_with_weights_for_short_slices(n, world):
    x, y = np.arange(n, dtype=np.float32)[:, None], np.arange(n)
    make = lambda: ArrayBatches(x, y, batch_size=4, seed=5)  # noqa: E731
    (one,), many = ranks_of(make, 1), ranks_of(make, world)
    assert one.batches_per_epoch() == many[0].batches_per_epoch()
    seen = []
    for _ in range(one.batches_per_epoch()):
        ref = next(one)["target"]
        parts = [(next(s)["target"], s.weight) for s in many]
        real = [t for t, w in parts if w > 0]
        assert torch.equal(torch.cat(real), ref)  # the same samples, in the same order
        # weights: each rank's share of the global batch times world size; they average to 1
        assert sum(w for _, w in parts) == pytest.approx(world)
        for t, w in parts:
            assert w == pytest.approx(len(t) * world / len(ref) if w else 0.0)
        seen += ref.tolist()
    assert sorted(seen) == list(range(n))  # an epoch: no sample lost, none twice


def test_global_batch_must_split_evenly():
    cfg = load_config("default", ["train.batch_size=10"])
    src = TokenWindows(np.arange(500) % 7, context=8, batch_size=10, seed=0)
    with pytest.raises(ConfigError, match="multiple of 4"):
        shard_source(src, cfg, World(rank=0, size=4))


def test_several_processes_need_one_run_dir_and_gym_is_refused(monkeypatch, tiny, cli, tmp_path):
    import trainwell
    from trainwell.distributed.world import setup

    # refused by the launcher before any process starts or any run directory is made
    done = cli("train", "cartpole_ppo", "--nproc", "2", "--run-dir", str(tmp_path / "rl"))
    assert done.returncode == 2 and "reinforcement-learning recipes" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "rl").exists()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--run-dir"):
        trainwell.train("default", tiny())
    with pytest.raises(ConfigError, match="reinforcement-learning"):
        setup(load_config("cartpole_ppo"))


@pytest.mark.parametrize("rows, ranks", [(44, 2), (7, 2), (3, 4), (1, 3), (0, 2), (96, 3)])
def test_shard_rows_is_torch_chunk(rows, ranks):
    chunks = torch.arange(rows).chunk(ranks) if rows else ()
    for r in range(ranks):
        lo, hi = shard_rows(rows, ranks, r)
        want = chunks[r].tolist() if r < len(chunks) else []
        assert list(range(lo, hi)) == want


def test_sharded_layout_round_trip_in_one_process(tmp_path):
    """The writer with a world of one (no process group): replicated tensors, index, manifest."""
    from trainwell import checkpoint as ckpt
    from trainwell.checkpoint.rng import RNGState
    from trainwell.distributed import checkpoint as dist_ckpt

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 2))
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, opt

    model, opt = make()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = dist_ckpt.sharded_app_state({"rng": RNGState()}, model, opt)
    path = dist_ckpt.save(tmp_path / "step-1", state, World(), step=1, meta={"val_loss": 1.0})
    assert {p.name for p in path.iterdir()} == {"shard-00000-of-00001.safetensors", "index.json", "manifest.json"}
    manifest = ckpt.verify(path)
    assert manifest["layout"] == "sharded" and manifest["world_size"] == 1
    json.loads((path / "index.json").read_text())  # strict JSON, nothing pickled
    assert ckpt.model_shapes(path) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    full = ckpt.load_entry(path, "model")
    assert all(torch.equal(full[k], v) for k, v in model.state_dict().items())

    fresh, fresh_opt = make()
    dist_ckpt.load(path, dist_ckpt.sharded_app_state({"rng": RNGState()}, fresh, fresh_opt), World())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][key], fresh_opt.state[q][key]), key
    with pytest.raises(CheckpointError, match="several ranks"):
        ckpt.load(path, {"model": model})
