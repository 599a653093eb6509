"""Rows of prompts and completions for learning from preferences: reading, checking, tokenizing,
and the stateful source that batches them.

Files are JSONL (one JSON object per line) or Parquet with TRL's column names:

    sft       prompt, completion          (supervised fine-tuning)
    pairs     prompt, chosen, rejected    (reward model, DPO)
    prompts   prompt                      (PPO, GRPO: the policy writes the completions; any other
                                           columns are passed to the reward functions)

Training sequences are ``prompt + completion`` token ids, right-padded: in a causal model a real
token never attends to padding after it, so no attention mask is needed. ``mask`` marks the
completion tokens, the only ones a loss counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from trainwell.errors import DataError
from trainwell.jsonl import json_objects

COLUMNS = {"sft": ("prompt", "completion"), "pairs": ("prompt", "chosen", "rejected"), "prompts": ("prompt",)}
ROW = "__row__"  # where a row came from, for error messages


@dataclass
class Tokenizer:
    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str]
    pad_id: int = 0
    eos_id: int | None = None  # appended to every completion (Hugging Face tokenizers); the char model has none


# --------------------------------------------------------------------------- reading


def read_table(path: str, key: str) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .parquet file (``key``: the config key that named it, for messages)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{key} = {path!r} does not exist; pass a .jsonl or .parquet file.")
    name = p.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(p).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{key} = {path}: cannot read it as Parquet ({str(e).splitlines()[0][:200]}).") from None
    elif name.endswith((".jsonl", ".json")):
        rows = [row for _, row in json_objects(p.read_text(encoding="utf-8"), f"{key} = {path}")]
    else:
        raise DataError(f"{key} = {path}: the file must end in .jsonl or .parquet.")
    if not rows:
        raise DataError(f"{key} = {path} has no rows.")
    for n, row in enumerate(rows, 1):
        row[ROW] = f"row {n} of {p}"
    return rows


def check_rows(rows: list[dict[str, Any]], kind: str, key: str) -> None:
    """Every row has the kind's columns as non-empty strings (one sentence naming the first bad row)."""
    need = COLUMNS[kind]
    for row in rows:
        where = row.get(ROW, "a built-in row")
        for col in need:
            if col not in row:
                have = ", ".join(sorted(k for k in row if k != ROW))
                raise DataError(f"{where} has no '{col}' column (it has {have}); {kind} rows need "
                                f"{', '.join(need)} (TRL's column names) - set {key} to such a file.")
            value = row[col]
            if not isinstance(value, str):
                raise DataError(f"{where}: '{col}' is a {type(value).__name__}, not a string; conversational "
                                f"(list of messages) rows are not supported - write the text itself.")
            if not value:
                what = "prompt" if col == "prompt" else "completion"
                raise DataError(f"{where}: '{col}' is empty; every row needs a non-empty {what} - drop or fill it.")


def held_out(prompt: str, fraction: float) -> bool:
    """The fixed split: a row is held out when its prompt hashes below ``fraction`` (so every row with
    the same prompt lands on the same side)."""
    digest = int(hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8], 16)
    return digest % 10_000 < fraction * 10_000


def load_rows(d: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(train rows, eval rows, facts) for data section ``d``: its files, or the built-in stdlib snippets."""
    kind = d.name
    if d.path:
        train = read_table(d.path, "data.path")
        check_rows(train, kind, "data.path")
        if d.eval_path:
            held = read_table(d.eval_path, "data.eval_path")
            check_rows(held, kind, "data.eval_path")
        else:
            rows, train, held = train, [], []
            for row in rows:
                (held if held_out(row["prompt"], d.eval_fraction) else train).append(row)
            if not held or not train:
                raise DataError(f"data.path = {d.path}: holding out data.eval_fraction = {d.eval_fraction} of its "
                                f"{len(rows)} rows leaves {len(train)} for training and {len(held)} for evaluation; "
                                f"give data.eval_path or change data.eval_fraction.")
        source = {"path": str(Path(d.path).expanduser().resolve()), "eval_path": d.eval_path or "split"}
    elif getattr(d, "builtin", "stdlib") == "exec_tasks":
        from trainwell.data.exec_tasks import exec_rows

        if d.eval_path or kind == "pairs":
            raise DataError("data.builtin = 'exec_tasks' has prompt/completion rows (sft) and prompt rows with "
                            "hidden tests (prompts), no pairs, and no data.eval_path (its held-out splits are built in).")
        split = "rl" if kind == "prompts" else "train"  # RL learns on tasks SFT never saw solved
        train, held = exec_rows(split)
        source = {"builtin": "exec_tasks", "split": split}
    else:
        from trainwell.data.code_tasks import stdlib_rows

        if d.eval_path:
            raise DataError("data.eval_path is set but data.path is not; give both files, or neither for the "
                            "built-in code snippets.")
        train, held = stdlib_rows(kind if kind == "pairs" else "sft", prompt_chars=d.prompt_chars,
                                  completion_chars=d.completion_chars, eval_fraction=max(d.eval_fraction, 0.01),
                                  cache_dir=d.cache_dir)
        source = {"builtin": "stdlib functions"}
    if d.rows:
        train = train[:d.rows]
    return train, held, {**source, "train_rows": len(train), "eval_rows": len(held)}


# --------------------------------------------------------------------------- tokens


@dataclass
class Sequences:
    """Prompt + completion token ids of N rows, right-padded to the longest."""

    ids: torch.Tensor  # (N, T) long
    mask: torch.Tensor  # (N, T) bool: completion tokens
    lengths: torch.Tensor  # (N,) long: real tokens per row

    def take(self, idx: torch.Tensor, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``idx``, cut to ``width`` columns (default: their longest row)."""
        lengths = self.lengths[idx]
        width = int(lengths.max()) if width is None else width
        return self.ids[idx, :width], self.mask[idx, :width], lengths


def pad_rows(rows: list[list[int]], starts: list[int], pad_id: int,
             masks: list[list[bool]] | None = None) -> Sequences:
    """``rows`` of token ids, completion from ``starts[i]`` on (``masks[i]``: which of those tokens
    count, e.g. not the feedback inside a multi-turn episode; default all)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, s) in enumerate(zip(rows, starts)):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        if masks is None:
            mask[i, s:len(r)] = True
        else:
            mask[i, s:len(r)] = torch.tensor(masks[i], dtype=torch.bool)
    return Sequences(ids, mask, torch.tensor([len(r) for r in rows], dtype=torch.long))


def prompt_ids(rows: list[dict[str, Any]], tok: Tokenizer, room: int, fix: str) -> list[list[int]]:
    """Each row's prompt tokens; a prompt longer than ``room`` tokens is an error (``fix`` says what to change)."""
    out = []
    for row in rows:
        ids = tok.encode(row["prompt"])
        if len(ids) > room:
            raise DataError(f"{row.get(ROW, 'a built-in row')}: the prompt is {len(ids)} tokens, longer than the "
                            f"{room} the context leaves for it; {fix}.")
        out.append(ids)
    return out


def encode_completions(rows: list[dict[str, Any]], column: str, tok: Tokenizer, context: int,
                       prompts: list[list[int]] | None = None) -> tuple[Sequences, int]:
    """prompt + ``column`` of every row as Sequences; completions that overflow ``context`` are cut.
    Returns (sequences, how many were cut)."""
    if prompts is None:
        prompts = prompt_ids(rows, tok, context - 1, "shorten it or raise data.context")
    seqs, starts, cut = [], [], 0
    for row, p in zip(rows, prompts):
        c = tok.encode(row[column]) + ([tok.eos_id] if tok.eos_id is not None else [])
        room = context - len(p)
        if len(c) > room:
            c, cut = c[:room], cut + 1
        seqs.append(p + c)
        starts.append(len(p))
    return pad_rows(seqs, starts, tok.pad_id), cut


# --------------------------------------------------------------------------- the source


class RowBatches:
    """A stateful source of batches of rows: each epoch visits the rows in an order drawn from
    ``(seed, epoch)``, so the whole position is two integers and resume rebuilds the next batch exactly.
    ``collate(indices)`` turns a (B,) tensor of row indices into the batch."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, collate: Callable[[torch.Tensor], dict[str, Any]],
                 what: str = "rows"):
        if n_rows < batch_size:
            raise DataError(f"the training data has {n_rows} {what}, fewer than train.batch_size = {batch_size}; "
                            f"lower the batch size or add rows.")
        self.n, self.batch_size, self.seed, self.collate = n_rows, batch_size, seed, collate
        self.epoch, self.index = 0, 0
        self._order: torch.Tensor | None = None
        self._order_epoch = -1

    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.index >= self.batches_per_epoch():
            self.epoch, self.index = self.epoch + 1, 0
        if self._order_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._order, self._order_epoch = torch.randperm(self.n, generator=g), self.epoch
        idx = self._order[self.index * self.batch_size:(self.index + 1) * self.batch_size]  # type: ignore[index]
        self.index += 1
        return self.collate(idx)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "rows": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def fixed_batches(n_rows: int, batch_size: int, collate: Callable[[torch.Tensor], dict[str, Any]],
                  limit: int = 0) -> list[dict[str, Any]]:
    """Evaluation batches over rows 0..n-1 in order (the last one may be short); ``limit`` batches at most."""
    starts = range(0, n_rows, batch_size)
    if limit:
        starts = starts[:limit]
    return [collate(torch.arange(s, min(s + batch_size, n_rows))) for s in starts]
