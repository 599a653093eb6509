"""One rank of the teardown test (started by torchrun, 2 processes): train a tiny GPT with DDP or
FSDP2 through the real Trainer (a few steps and a sharded checkpoint; with "fail" an error is raised
inside the ``with`` block, as a failing run would), then write the names of this process's native
threads to OUT_DIR/rank-R.json.

trainwell's teardown must end gloo's worker threads here, while the interpreter is alive: one
still running at interpreter exit may release a collective's tensors then and abort the rank
("terminate called without an active exception"; see trainwell.distributed.world.teardown).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: tinyrun

import trainwell  # noqa: E402
from tinyrun import tiny_sets  # noqa: E402


def threads() -> list[str]:
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in sorted(os.listdir("/proc/self/task"))]


def main() -> None:
    strategy, fail, out, text = sys.argv[1], sys.argv[2] == "fail", Path(sys.argv[3]), Path(sys.argv[4])
    sets = tiny_sets(text, distributed__strategy=strategy, train__steps=4, checkpoint__every=2, eval__every=2,
                     log__plots=False, log__tensorboard=False)
    try:
        with trainwell.trainer("default", sets, run_dir=out / "run") as t:
            t.fit()
            if fail:
                raise RuntimeError("a failure after the steps")
            t.finish()
    except RuntimeError as e:
        assert fail, e
    rank = os.environ["RANK"]
    (out / f"rank-{rank}.json").write_text(json.dumps(threads()))


if __name__ == "__main__":
    main()
