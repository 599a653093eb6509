"""`trainwell train --nproc N`: start N local processes through torch's own launcher (torchrun).

The parent process only validates the recipe, picks the run directory (every rank, and every
restart of the group, must write to the same one) and hands over to
``python -m torch.distributed.run``; torchrun's elastic agent starts, watches and — with
``--max-restarts`` — restarts the group, which then resumes from the newest checkpoint.
Multi-node runs call torchrun directly with its rendezvous options (README, "Distributed").
"""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_command(nproc: int, train_args: list[str], *, max_restarts: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "-m", "trainwell", "train", *train_args]


def launch(nproc: int, train_args: list[str], *, max_restarts: int) -> int:
    """Run the group to completion; returns torchrun's exit status."""
    env = dict(os.environ)
    # N processes on the same cores: one thread each unless the user says otherwise (torchrun
    # would set the same default with a warning); train.threads overrides it per process.
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(torchrun_command(nproc, train_args, max_restarts=max_restarts), env=env)
