"""Muon on FSDP2 shards equals Muon on the whole model (2 real ranks, a few seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("muon_probe.py")


def test_muon_on_fsdp_shards_updates_like_one_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(PROBE), str(tmp_path)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert r["moved"] > 1e-3  # every block weight was updated ...
        assert r["diff"] < 1e-6, r  # ... exactly as without shards
        assert r["sharded_state"]  # and the momentum is kept as this rank's rows (saved as shards)
