"""One rank of the teardown test (started by torchrun, 2 processes): join the group as `trainwell
train` does, wrap a tiny GPT in DDP or FSDP2, take a step and the checkpoint's collectives, leave
the group, and write the names of this process's native threads to OUT_DIR/rank-R.json.

trainwell's teardown must end gloo's worker threads here, while the interpreter is alive: one
still running at interpreter exit may release a collective's tensors then and abort the rank
("terminate called without an active exception"; see trainwell.distributed.world.teardown).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from trainwell.config import load_config
from trainwell.distributed import parallel
from trainwell.distributed.world import barrier, gather_objects, setup, teardown
from trainwell.models.gpt import GPT


def threads() -> list[str]:
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in sorted(os.listdir("/proc/self/task"))]


def train(cfg, world, fail: bool) -> None:
    """A step and the checkpoint's collectives; raising here leaves the model in the traceback."""
    torch.manual_seed(0)
    model = GPT(cfg.model, vocab_size=16)
    step = parallel.parallelize(model, cfg, world)
    step(torch.randint(0, 16, (2, 8))).float().mean().backward()
    gather_objects(world, {"rank": world.rank})  # what the sharded checkpoint save ends with
    barrier(world)
    if fail:
        raise RuntimeError("a failure after the step")


def main() -> None:
    strategy, fail, out = sys.argv[1], sys.argv[2] == "fail", Path(sys.argv[3])
    cfg = load_config("default", [f"distributed.strategy='{strategy}'", "train.precision='fp32'",
                                  "model.n_layer=2", "model.n_head=2", "model.n_embd=16", "model.context=8"])
    world = setup(cfg)
    try:
        train(cfg, world, fail)
    except RuntimeError as e:
        teardown(world, e)
    else:
        teardown(world)
    (out / f"rank-{world.rank}.json").write_text(json.dumps(threads()))


if __name__ == "__main__":
    main()
