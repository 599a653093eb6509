"""Data-parallel training on torch.distributed, applied from outside the model and the loop's Job.

Plain functions, in the order the loop uses them:

* :mod:`.world`     — who am I (rank, world size), process group set-up, collective timeouts
* :mod:`.parallel`  — shard the data source, wrap the model (DDP or FSDP2), gradient sync control
* :mod:`.reduce`    — per-step loss/units reduction and sharded evaluation
* :mod:`.checkpoint` — per-rank, pickle-free sharded checkpoints (N ranks save, M ranks load)
* :mod:`.launch`    — `trainwell train --nproc N` through torch's own launcher (torchrun)

With one process none of this runs: the loop's single-process path is unchanged.
"""
