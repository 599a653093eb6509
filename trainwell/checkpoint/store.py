"""Atomic, checksummed, pickle-free checkpoint directories.

Layout of one checkpoint ``<root>/step-<N>/``::

    model.safetensors      one file per app-state entry that holds tensors; model keys as-is
    optimizer.safetensors
    state.json             the non-tensor structure of every entry (see format.py)
    manifest.json          format version, step, caller meta, size + sha256 of every file;
                           written last, so a directory without it was never finished

Crash safety: everything is written into ``<root>/.tmp-<name>-<pid>-<rand>``, each file and
the directory are fsynced, then one ``rename`` publishes it. A ``step-N`` directory therefore
either does not exist or is complete; stale ``.tmp-*`` directories are swept by
:func:`cleanup_tmp` (called from :func:`prune`).

Distributed note: runs with several processes write a "sharded" layout instead (one
safetensors file per rank plus a JSON index; see ``sharded.py`` and
``trainwell/distributed/checkpoint.py``). Its manifest has the same shape and checksums, so
``verify``/``latest_valid``/``prune`` treat both alike, and ``load_entry`` reads either.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import safetensors.torch
import torch

from trainwell.checkpoint.format import EncodedEntry, decode, encode
from trainwell.errors import CheckpointError

FORMAT_NAME = "trainwell-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STATE = "state.json"

_STEP_RE = re.compile(r"^step-(\d+)$")
# .tmp-<name>-<pid>-<rand>[-<suffix>]; <name> may itself contain dashes ("step-12").
_TMP_RE = re.compile(r"^\.tmp-.+-(?P<pid>\d+)-[0-9a-f]{8}(?:-[a-z]+)?$")
# Entry names become file names; keep them boring.
_ENTRY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state round-trips through a plain nested dict (nn.Module, Optimizer…)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class Staged:
    """Phase-1 output: a private snapshot of every entry, safe to write while training runs."""

    entries: dict[str, EncodedEntry]


# --------------------------------------------------------------------------- save


def stage(app_state: Mapping[str, Stateful]) -> Staged:
    """Snapshot every entry: call ``state_dict()`` and copy all tensors to fresh CPU memory.

    After this returns the optimizer may step again: the copies do not share memory with
    any live parameter, so phase 2 (:func:`write`) can run in a background thread.
    """
    entries: dict[str, EncodedEntry] = {}
    for name, obj in app_state.items():
        if not _ENTRY_RE.match(name):
            raise CheckpointError(
                f"app state name {name!r} cannot be used as a checkpoint file name; use letters, "
                "digits, '_', '-' or '.' (not starting with '.')."
            )
        entries[name] = encode(name, obj.state_dict())
    return Staged(entries)


def save(
    ckpt_dir: Path, app_state: Mapping[str, Stateful], *, step: int, meta: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint of ``app_state`` to ``ckpt_dir`` atomically; returns ``ckpt_dir``."""
    return write(stage(app_state), ckpt_dir, step=step, meta=meta)


def write(staged: Staged, ckpt_dir: Path, *, step: int, meta: dict[str, Any] | None = None) -> Path:
    """Phase 2: write ``staged`` into a temp dir, fsync it, then rename it to ``ckpt_dir``.

    On any OS failure the temp dir is removed and :class:`CheckpointError` is raised; the
    previous checkpoints (and a pre-existing ``ckpt_dir``) are left as they were.
    """
    ckpt_dir = Path(ckpt_dir)
    meta = dict(meta or {})
    try:
        # allow_nan: a NaN val_loss must not crash the save; Python's json reads it back.
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint meta for {ckpt_dir} is not JSON-serialisable ({e}); pass only str, "
            "int, float, bool, None, lists and dicts."
        ) from e

    parent = ckpt_dir.parent
    tmp: Path | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / f".tmp-{ckpt_dir.name}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        files: dict[str, dict[str, Any]] = {}
        state_doc: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "entries": {}}
        for name, entry in staged.entries.items():
            file_name = None
            if entry.tensors:
                file_name = f"{name}.safetensors"
                # Exactly one metadata key: safetensors writes the metadata map in hash
                # order, so two keys would make identical state produce different bytes
                # (and sha256s) from run to run. "pt" is what Hugging Face loaders expect.
                _save_safetensors(entry.tensors, tmp / file_name, {"format": "pt"})
                files[file_name] = _fsync_and_hash(tmp / file_name)
            state_doc["entries"][name] = {
                "file": file_name,
                # Tied tensors (alias key -> stored key). Loading does not need this (the
                # references in "state" already point at the stored key); it is here so a
                # reader of <name>.safetensors alone knows which keys to re-tie.
                "aliases": entry.aliases,
                "state": entry.structure,
            }
        # allow_nan=False: format.py already encoded non-finite floats, so state.json is
        # strict JSON; this is the guard that it stays so.
        files[STATE] = _write_bytes(tmp / STATE, _dumps(state_doc, allow_nan=False))
        manifest = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "step": int(step),
            "entries": list(staged.entries),
            "torch_version": torch.__version__,
            "meta": json.loads(meta_json),
            "files": files,
        }
        _write_bytes(tmp / MANIFEST, _dumps(manifest, allow_nan=True))  # last: marks completion
        _fsync_dir(tmp)
        _publish(tmp, ckpt_dir)
        tmp = None
        _fsync_dir(parent)
    except OSError as e:
        raise CheckpointError(
            f"could not write checkpoint {ckpt_dir}: {_explain(e, parent)}; the previous "
            f"checkpoints are untouched, so {_remedy(e)} and save again."
        ) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return ckpt_dir


def _explain(e: OSError, parent: Path) -> str:
    # "File exists" is what mkdir says when a path component is a regular file; say that.
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                return f"{p} is a file, not a directory"
            break
    code = f" [{errno.errorcode.get(e.errno, e.errno)}]" if e.errno else ""
    return f"{e.strerror or e}{code} at {e.filename or parent}"


def _remedy(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the directory's permissions"
    return "fix the checkpoint path"


_OS_ERROR_RE = re.compile(r"os error (\d+)")


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # safetensors reports I/O failures (disk full, permissions) as SafetensorError, not
    # OSError; turn them back into OSError so they get the same clean-up and message.
    try:
        safetensors.torch.save_file(tensors, path, metadata=metadata)
    except safetensors.SafetensorError as e:
        m = _OS_ERROR_RE.search(str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from e


def _dumps(doc: Any, *, allow_nan: bool) -> bytes:
    return (json.dumps(doc, indent=1, allow_nan=allow_nan) + "\n").encode()


def _write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _fsync_and_hash(path: Path) -> dict[str, Any]:
    # safetensors wrote the file itself; re-reading it (from page cache) to hash is cheaper
    # than holding a second in-memory copy of a large model just to hash it.
    with open(path, "r+b") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        os.fsync(f.fileno())
    return {"size": path.stat().st_size, "sha256": digest}


def _fsync_dir(path: Path) -> None:
    # Makes the directory entries (new files, the rename) durable. Not possible on Windows.
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, ckpt_dir: Path) -> None:
    """rename(tmp -> ckpt_dir); an existing ckpt_dir is moved aside first, deleted after."""
    if not ckpt_dir.exists():
        os.replace(tmp, ckpt_dir)
        return
    # Named .tmp-* so that a crash between the two renames leaves only sweepable debris.
    old = ckpt_dir.parent / f".tmp-{ckpt_dir.name}-{os.getpid()}-{secrets.token_hex(4)}-old"
    os.replace(ckpt_dir, old)
    try:
        os.replace(tmp, ckpt_dir)
    except OSError:
        os.replace(old, ckpt_dir)  # put the previous one back before reporting
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- verify / load


def _read_manifest(ckpt_dir: Path) -> dict[str, Any]:
    if not ckpt_dir.is_dir():
        raise CheckpointError(
            f"checkpoint directory {ckpt_dir} does not exist; check the path or pick one from "
            "the run's checkpoints/ folder."
        )
    path = ckpt_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {ckpt_dir} has no {MANIFEST}, so it was never completely written; "
            "resume from an earlier checkpoint."
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint manifest {path} cannot be read ({e}); the checkpoint is corrupt, "
            "resume from an earlier one."
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is not a trainwell checkpoint manifest; point at a step-<N> directory "
            "written by trainwell."
        )
    if not isinstance(manifest.get("version"), int) or manifest["version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {ckpt_dir} has format version {manifest.get('version')!r} but this "
            f"trainwell reads up to {FORMAT_VERSION}; upgrade trainwell to load it."
        )
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(
            f"checkpoint manifest {path} has no file list; the checkpoint is corrupt, resume "
            "from an earlier one."
        )
    return manifest


def _check_file(ckpt_dir: Path, name: str, expected: Mapping[str, Any]) -> None:
    path = ckpt_dir / name
    try:
        size = path.stat().st_size
        if size != expected.get("size"):
            raise CheckpointError(
                f"checkpoint file {path} is {size} bytes but the manifest says "
                f"{expected.get('size')}, so it is truncated or corrupt; resume from an earlier "
                "checkpoint."
            )
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint file {path} is missing; resume from an earlier checkpoint."
        ) from None
    except OSError as e:
        raise CheckpointError(
            f"checkpoint file {path} cannot be read ({e.strerror or e}); fix its permissions or "
            "resume from an earlier checkpoint."
        ) from e
    if digest != expected.get("sha256"):
        raise CheckpointError(
            f"checkpoint file {path} fails its sha256 check, so its contents are corrupt; "
            "resume from an earlier checkpoint."
        )


def read_manifest(ckpt_dir: Path) -> dict[str, Any]:
    """The manifest (meta, config, file list) without hashing the files: for reading what a
    checkpoint records before :func:`verify` or :func:`load` checks its contents."""
    return _read_manifest(Path(ckpt_dir))


def verify(ckpt_dir: Path) -> dict[str, Any]:
    """Check every file against the manifest (presence, size, sha256); returns the manifest."""
    ckpt_dir = Path(ckpt_dir)
    manifest = _read_manifest(ckpt_dir)
    for name, expected in manifest["files"].items():
        _check_file(ckpt_dir, name, expected)
    return manifest


def _read_state(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / STATE
    try:
        doc = json.loads(path.read_text())
        return dict(doc["entries"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint state {path} cannot be read ({e}); the checkpoint is corrupt, resume "
            "from an earlier one."
        ) from e


def _rebuild(ckpt_dir: Path, name: str, entry: Mapping[str, Any]) -> Any:
    tensors: dict[str, torch.Tensor] = {}
    if entry.get("file"):
        path = ckpt_dir / entry["file"]
        try:
            tensors = safetensors.torch.load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(
                f"checkpoint file {path} cannot be read as safetensors ({e}); resume from an "
                "earlier checkpoint."
            ) from e
    return decode(entry.get("state"), tensors, where=f"entry {name!r} of checkpoint {ckpt_dir}")


def load_entry(ckpt_dir: Path, name: str, *, verified: bool = False) -> Any:
    """Rebuild one entry's state_dict (tensors on CPU) without loading it into anything.

    Only the files this entry needs are checksummed, so loading just the model for eval does
    not hash a possibly much larger optimizer file; ``verified=True`` skips even that, for a
    checkpoint :func:`verify` has just checked.
    """
    ckpt_dir = Path(ckpt_dir)
    manifest = _read_manifest(ckpt_dir)
    if manifest.get("layout") == "sharded":  # written by several ranks: assemble full tensors
        from trainwell.checkpoint import sharded

        if not verified:
            verify(ckpt_dir)
        return sharded.load_entry(ckpt_dir, name)
    if not verified:
        _check_file(ckpt_dir, STATE, manifest["files"].get(STATE, {}))
    entries = _read_state(ckpt_dir)
    if name not in entries:
        raise CheckpointError(
            f"checkpoint {ckpt_dir} has no entry {name!r} (it holds {', '.join(entries) or 'nothing'}); "
            "pick one of those names."
        )
    file_name = entries[name].get("file")
    if file_name and not verified:
        _check_file(ckpt_dir, file_name, manifest["files"].get(file_name, {}))
    return _rebuild(ckpt_dir, name, entries[name])


def model_shapes(ckpt_dir: Path) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of the checkpoint's model entry (either layout).

    Read from the safetensors header and the JSON index alone: no tensor is loaded and nothing is
    hashed (callers verify the checkpoint once, before or when they load it).
    """
    ckpt_dir = Path(ckpt_dir)
    if _read_manifest(ckpt_dir).get("layout") == "sharded":
        from trainwell.checkpoint import sharded

        return sharded.model_shapes(ckpt_dir)
    entry = _read_state(ckpt_dir).get("model")
    if entry is None:
        raise CheckpointError(f"checkpoint {ckpt_dir} has no model entry; it was not written by a training run.")
    shapes: dict[str, tuple[int, ...]] = {}
    if entry.get("file"):
        path = ckpt_dir / entry["file"]
        try:
            with safetensors.safe_open(path, framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(
                f"checkpoint file {path} cannot be read as safetensors ({e}); resume from an "
                "earlier checkpoint."
            ) from e
    # the state structure names every parameter; tied ones point at the stored key (format.py)
    names = decode(entry.get("state"), {k: _Shape(v) for k, v in shapes.items()},
                   where=f"entry 'model' of checkpoint {ckpt_dir}")
    return {k: v.shape for k, v in names.items() if isinstance(v, _Shape)}


class _Shape:
    """Stands in for a tensor while decoding the state structure: only its shape is needed."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def load(ckpt_dir: Path, app_state: Mapping[str, Stateful], *, strict: bool = True,
         verified: bool = False) -> dict[str, Any]:
    """Verify ``ckpt_dir`` and restore every entry of ``app_state`` in place; returns the manifest.

    ``strict``: every key of ``app_state`` must be in the checkpoint; with ``strict=False``
    missing ones are left untouched (e.g. loading weights into a fresh fine-tuning run).
    ``verified=True``: the caller has just run :func:`verify`, so the files are not hashed again.
    """
    ckpt_dir = Path(ckpt_dir)
    manifest = _read_manifest(ckpt_dir) if verified else verify(ckpt_dir)
    if manifest.get("layout") == "sharded":
        raise CheckpointError(f"checkpoint {ckpt_dir} was written by several ranks; restore it with "
                              f"trainwell.distributed.checkpoint.load (the training loop does).")
    entries = _read_state(ckpt_dir)
    missing = [n for n in app_state if n not in entries]
    if strict and missing:
        raise CheckpointError(
            f"checkpoint {ckpt_dir} has no entry for {', '.join(map(repr, missing))} (it holds "
            f"{', '.join(entries) or 'nothing'}); load with strict=False to skip them."
        )
    for name, obj in app_state.items():
        if name in missing:
            continue
        state = _rebuild(ckpt_dir, name, entries[name])
        try:
            obj.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {ckpt_dir} entry {name!r} does not fit this run ({first}); load a "
                "checkpoint written with the same model and optimizer config."
            ) from e
    return manifest


# --------------------------------------------------------------------------- housekeeping


def list_checkpoints(root: Path) -> list[Path]:
    """``step-<N>`` directories under ``root``, oldest (smallest N) first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_valid(root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """Newest checkpoint that verifies, and ``(path, reason)`` for each newer one skipped."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(root)):
        try:
            verify(path)
        except CheckpointError as e:
            skipped.append((path, str(e)))
            continue
        return path, skipped
    return None, skipped


def _looks_complete(path: Path) -> dict[str, Any] | None:
    """Cheap check for prune (no hashing): manifest parses and every file has its size."""
    try:
        manifest = _read_manifest(path)
        for name, expected in manifest["files"].items():
            if (path / name).stat().st_size != expected.get("size"):
                return None
    except (CheckpointError, OSError):
        return None
    return manifest


def _best_value(manifest: Mapping[str, Any], key: str) -> float | None:
    value = (manifest.get("meta") or {}).get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return float(value)
    return None  # missing, non-numeric or NaN: never "best"


def prune(root: Path, *, keep_last: int, keep_best: bool = True, best_key: str = "val_loss") -> list[Path]:
    """Delete old checkpoints; returns the deleted paths.

    Keeps the newest ``keep_last`` complete-looking checkpoints, the one with the lowest
    ``meta[best_key]`` when ``keep_best``, and always the newest directory. Incomplete ones
    do not count towards ``keep_last``, so a damaged newest checkpoint never causes the
    last good one to be deleted. Also sweeps stale ``.tmp-*`` directories.
    """
    if keep_last < 1:
        raise ValueError(f"prune keep_last must be >= 1, got {keep_last}")
    root = Path(root)
    cleanup_tmp(root)
    ckpts = list_checkpoints(root)
    if not ckpts:
        return []
    good = [(p, m) for p in ckpts if (m := _looks_complete(p)) is not None]
    keep = {ckpts[-1]} | {p for p, _ in good[-keep_last:]}
    if keep_best:
        scored = [(v, p) for p, m in good if (v := _best_value(m, best_key)) is not None]
        if scored:
            keep.add(min(scored, key=lambda vp: vp[0])[1])
    deleted = []
    for p in ckpts:
        if p not in keep:
            _remove_dir(p)
            deleted.append(p)
    return deleted


def _remove_dir(path: Path) -> None:
    # Rename first so an interrupted delete leaves sweepable .tmp-* debris, not a
    # half-deleted step-N that latest_valid would have to report as corrupt.
    doomed = path.parent / f".tmp-{path.name}-{os.getpid()}-{secrets.token_hex(4)}-del"
    try:
        os.replace(path, doomed)
    except OSError as e:
        raise CheckpointError(
            f"could not delete old checkpoint {path}: {e.strerror or e}; fix its permissions or "
            "remove it by hand."
        ) from e
    shutil.rmtree(doomed, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # e.g. an AsyncSaver write in progress in this very process
    if os.name == "nt":
        return False  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def cleanup_tmp(root: Path) -> None:
    """Remove ``.tmp-*`` dirs left under ``root`` by crashed writers (not by live ones)."""
    root = Path(root)
    if not root.is_dir():
        return
    for p in root.iterdir():
        m = _TMP_RE.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group("pid"))):
            shutil.rmtree(p, ignore_errors=True)
