"""Who this process is, and the process group (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch

from trainwell.config.schema import Config
from trainwell.errors import ConfigError, TrainwellError


class CollectiveTimeout(TrainwellError):
    """A collective did not complete: it timed out (a rank hung) or a peer's connection closed (it died)."""

    exit_code = 4


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    strategy: str = "none"  # "ddp" | "fsdp" when size > 1
    timeout_s: float = 0.0
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes logs, plots, progress and the summary."""
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check(cfg: Config) -> None:
    """Refuse, before any process starts, what several processes cannot do yet."""
    if cfg.data.name in ("gym", "replay"):
        raise ConfigError("distributed training of reinforcement-learning recipes is not supported yet: the "
                          "rollout collector and the replay buffer are not sharded; run them with one process.")
    if cfg.data.name in ("sft", "pairs", "prompts"):
        raise ConfigError("distributed training of the preference recipes (SFT, reward model, DPO, PPO, GRPO) is "
                          "not supported yet: their row batches and rollouts are not split across ranks; run them "
                          "with one process.")
    if cfg.adapter.method != "none":
        raise ConfigError(f"adapter.method = '{cfg.adapter.method}' is not supported with several processes yet "
                          f"(adapter checkpoints are not sharded); run it with one process.")
    if cfg.train.precision == "fp16":
        raise ConfigError("train.precision = 'fp16' is not supported with several processes (its loss "
                          "scaler is not sharded); use 'bf16' or 'fp32'.")
    if cfg.checkpoint.async_save:
        raise ConfigError("checkpoint.async_save is not supported with several processes (every rank "
                          "writes its shard synchronously); set checkpoint.async_save = false.")


def setup(cfg: Config) -> World:
    """Join the process group when started by torchrun with more than one process."""
    size = env_world_size()
    if size <= 1:
        return World()
    import torch.distributed as dist

    check(cfg)
    d = cfg.distributed
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    backend = d.backend if d.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError("distributed.backend = 'nccl' needs CUDA GPUs; use 'auto' or 'gloo' on CPU.")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        import_before_joining()
        timeout = timedelta(seconds=d.timeout_s)
        dist.init_process_group(backend, timeout=timeout, device_id=device if cuda else None,
                                **restart_store(rank, size, timeout))
    return World(rank=rank, size=size, local_rank=local_rank, strategy=d.strategy, timeout_s=d.timeout_s,
                 device=device)


def import_before_joining() -> None:
    """Import the torch.distributed modules a rank uses before it joins the group.

    Some of them take ``group.WORLD`` as a default argument, evaluated at import: imported after
    ``init_process_group`` they hold the default group for the life of the process (e.g.
    ``ShardedGradScaler(process_group=dist.group.WORLD)``, imported with torch.distributed.fsdp,
    which torch.distributed.checkpoint imports too; the collectives of torch.distributed.nn),
    so ``teardown`` could not end it. Imported before, the default is None.
    """
    import torch.distributed.checkpoint.state_dict  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.nn  # noqa: F401
    import torch.distributed.tensor  # noqa: F401


def inject_fault(world: World, step: int) -> None:
    """Fault injection for the tests, before step STEP on rank RANK (first attempt only):

    TRAINWELL_FAULT="hang:RANK:STEP"  the rank stops responding (sleeps), so the others' next
                                      collective must time out;
    TRAINWELL_FAULT="kill:RANK:STEP"  the rank SIGKILLs itself, as an out-of-memory kill would.
    """
    spec = os.environ.get("TRAINWELL_FAULT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    kind, rank, at = spec.split(":")
    if int(rank) != world.rank or int(at) != step:
        return
    import signal

    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    import time

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # hung, but torchrun can still stop it at once
    time.sleep(10 * world.timeout_s + 60)


def restart_store(rank: int, size: int, timeout: timedelta) -> dict[str, Any]:
    """After torchrun restarted the group: the rendezvous store under a fresh key prefix.

    torchrun keeps its key-value store across restarts, and the new processes' gloo handshake
    would otherwise read the dead processes' addresses still stored under the same keys (seen
    here: "connectFullMesh ... Connection refused" on some restarts). The first attempt uses
    torch's own env:// set-up unchanged.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0":
        return {}
    import torch.distributed as dist

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent hosts it
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size=size,
                         is_master=not agent_store and rank == 0, timeout=timeout, multi_tenant=True)
    return {"store": dist.PrefixStore(f"trainwell/attempt-{attempt}", base), "rank": rank, "world_size": size}


def teardown(world: World, error: BaseException | None = None) -> None:
    """Leave the process group and end its threads while the interpreter is fully alive.

    Why it matters: a gloo worker thread releases each finished collective's tensors a moment
    after the caller saw the collective complete, and releasing a tensor that has a Python
    wrapper takes the GIL. If the main thread has meanwhile begun interpreter finalization,
    Python ends the worker inside a noexcept destructor and the rank aborts after a
    successful run ("terminate called without an active exception", SIGABRT; seen in the
    multi-process tests under load). The group's destructor waits for its workers and joins
    them, but ``destroy_process_group`` only drops torch's own registry entries: the group
    lives on while anything else holds it. Here, besides :func:`import_before_joining`:

    * FSDP2's DeviceMesh keeps the groups in ``_pg_registry``, and DTensor's sharding caches
      keep the meshes alive until interpreter exit: their references are dropped (the groups
      are destroyed, so the meshes are unusable anyway);
    * the parallel model (DDP's reducer, FSDP's state) holds the group through reference
      cycles, collected here; after a failure (``error``) the traceback's frames hold the
      model too, so their locals are cleared (the message and the traceback lines remain).
      A failure inside FSDP's backward can leave the model referenced from the autograd
      engine; the group may then outlive this call (on a rank that is failing anyway).
    """
    if world.size == 1:
        return
    import gc
    import traceback

    import torch.distributed as dist

    seen: set[int] = set()
    while error is not None and id(error) not in seen:  # the error and the ones it was raised from
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    for obj in gc.get_objects():
        if type(obj).__name__ == "DeviceMesh" and isinstance(getattr(obj, "_pg_registry", None), dict):
            obj._pg_registry.clear()
    gc.collect()  # the last references gone, the group's destructor joins its threads here


@contextlib.contextmanager
def collective(world: World, what: str) -> Iterator[None]:
    """Turn a timed-out or broken collective inside this block into one clear error.

    ``what`` names the operation ("gradient all-reduce in backward", "checkpoint barrier", ...).
    gloo and NCCL raise RuntimeError subclasses (DistBackendError, DistNetworkError) whose text
    mentions a timeout or a closed connection when another rank hung or died.
    """
    if world.size == 1:
        yield
        return
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        import torch.distributed as dist

        if not (isinstance(e, dist.DistError) or "timed out" in text.lower() or "gloo" in text.lower()):
            raise
        first = text.strip().splitlines()[0][:160] if text.strip() else type(e).__name__
        if "timed out" in text.lower() or "timeout" in text.lower():
            raise CollectiveTimeout(
                f"rank {world.rank} of {world.size}: {what} did not complete within distributed.timeout_s = "
                f"{world.timeout_s:g} s ({first}); another rank hung or died — check its output above, "
                f"or raise distributed.timeout_s if it is only slow.") from None
        raise CollectiveTimeout(
            f"rank {world.rank} of {world.size}: {what} failed because another rank left ({first}); check its "
            f"output above. With --max-restarts torchrun restarts the group, which resumes from the newest "
            f"checkpoint.") from None


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (small metadata only: paths, names)."""
    if world.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (small, JSON-able metadata), in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()
