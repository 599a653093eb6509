"""Leaving the process group ends gloo's threads before the interpreter exits.

The flaky abort this guards against ("terminate called without an active exception" from a rank
after a successful FSDP run, about 1 run in 60 under load) happened when a gloo worker thread
released a collective's tensors during interpreter finalization; it can only happen while such
a thread is alive then. Whether it is, is deterministic: this checks it in two real ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("teardown_probe.py")


@pytest.mark.parametrize("strategy, outcome", [("fsdp", "ok"), ("ddp", "fail")])
def test_teardown_joins_the_gloo_threads(strategy, outcome, tmp_path, tiny_text):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(PROBE), strategy, outcome, str(tmp_path), str(tiny_text)], capture_output=True, text=True,
                          timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):  # gloo names its threads gloo_tcp_loop and pt_gloo_runloop
        threads = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert not [t for t in threads if "gloo" in t], (rank, threads)
