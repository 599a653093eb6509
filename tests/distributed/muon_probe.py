"""One rank of the Muon-under-FSDP2 test (started by torchrun, 2 processes): a tiny GPT sharded by
FSDP2 and an unsharded copy take the same three Muon steps on the same batch; this rank writes the
largest difference between their weights (gathered whole) to OUT_DIR/rank-R.json.

Both ranks see the same batch, so FSDP's averaged gradient is each rank's own and the two models
compute the same numbers; what is checked is the sharded update: each weight's update gathered
whole, orthogonalised (q, k, v apart: the 96 rows of qkv split at row 48 between the ranks, inside
k), and each rank keeping its own rows.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from trainwell.config import load_config
from trainwell.engine.optim import build_optimizer
from trainwell.models.gpt import build_gpt


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    cfg = load_config("default", ["optim.name='muon'", "model.n_layer=2", "model.n_embd=32", "model.n_head=2"])
    torch.manual_seed(0)
    plain = build_gpt(cfg.model, vocab_size=40, context=16)
    sharded = copy.deepcopy(plain)
    start = {k: v.clone() for k, v in plain.state_dict().items()}
    for block in sharded.blocks:
        fully_shard(block)
    fully_shard(sharded)
    cpu = torch.device("cpu")
    opts = [build_optimizer(m, cfg.optim, cpu) for m in (plain, sharded)]
    for step in range(3):
        x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(step))  # the same on both ranks
        for m, o in zip((plain, sharded), opts):
            loss = torch.nn.functional.cross_entropy(m(x).flatten(0, 1), x.roll(-1, 1).flatten())
            loss.backward()
            o.step()
            o.zero_grad()
    diff = 0.0
    for (name, p), q in zip(plain.named_parameters(), sharded.parameters()):
        diff = max(diff, float((p.detach() - q.full_tensor().detach()).abs().max()))
    moved = min(float((v - start[k]).abs().max()) for k, v in plain.state_dict().items() if k.startswith("blocks."))
    sharded_state = all(type(s["momentum_buffer"]).__name__ == "DTensor"
                        for s in opts[1].state.values() if "momentum_buffer" in s)
    (out / f"rank-{dist.get_rank()}.json").write_text(json.dumps({"diff": diff, "moved": moved,
                                                                  "sharded_state": sharded_state}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
