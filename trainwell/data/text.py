"""Character-level text corpora, tokenized once into a cache.

Why characters: the default run must finish in minutes on a laptop CPU, so it needs no
tokenizer training step, every byte of source code stays representable, and the val loss in
nats/token converts directly to bits per character. The vocabulary is every character of the
corpus seen at least ``min_char_count`` times; rarer ones (a few exotic Unicode characters
in the stdlib's test files) map to ``<unk>`` so the output layer stays small.

Two sources:
- ``stdlib``: every ``.py`` file of the running Python's standard library (a real ~12 MB code
  corpus present on every machine). Validation holds out whole *files*, picked by a hash of
  their relative path, so no validation text is ever seen in training.
- ``file``: one UTF-8 text file; the last ``val_fraction`` of it is validation (nanoGPT's
  split, so Shakespeare numbers compare).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainwell.config.schema import TextDataConfig
from trainwell.errors import DataError

UNK = "\ufffd"  # stands for characters outside the vocabulary
FILE_SEPARATOR = "\n\n"
CACHE_VERSION = 1


@dataclass
class TextCorpus:
    """Token ids for train and validation plus the vocabulary that maps them to characters."""

    train: np.ndarray  # (N_train,) uint16/uint32 ids
    val: np.ndarray  # (N_val,)
    vocab: list[str]  # id -> character
    unigram_nats: float  # cross-entropy of a unigram model fit on train, measured on val
    info: dict

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        return encode(text, self.vocab)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


# --------------------------------------------------------------------------- sources


def stdlib_files() -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    return root, files


def is_val_file(rel: str, fraction: float) -> bool:
    digest = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16)
    return digest % 10_000 < fraction * 10_000


def top_level(rel: Path) -> str:
    """The top-level package or module a stdlib file belongs to: email/mime/text.py -> email, json.py ->
    json (unittest's tests count as unittest, test/ is the package 'test')."""
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def read_stdlib(fraction: float, packages: list[str] | tuple[str, ...] = (),
                exclude: list[str] | tuple[str, ...] = (), *, need_val: bool = True) -> tuple[str, str, dict]:
    """Train and validation text (whole files held out by a hash of their path); ``need_val=False``
    for a share of the training text alone (e.g. one federated silo's package)."""
    root, files = stdlib_files()
    if packages or exclude:
        known = {top_level(p.relative_to(root)) for p in files}
        unknown = sorted(set(packages) - known) + sorted(set(exclude) - known)
        if unknown:
            raise DataError(f"data.packages / data.exclude_packages: {unknown[0]!r} is not a top-level package "
                            f"or module of the stdlib under {root} (e.g. {', '.join(sorted(known)[:8])}).")
        files = [p for p in files if (not packages or top_level(p.relative_to(root)) in packages)
                 and top_level(p.relative_to(root)) not in exclude]
    train, val = [], []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of stdlib test files are deliberately not UTF-8
        (val if is_val_file(path.relative_to(root).as_posix(), fraction) else train).append(text)
    if not train or (need_val and not val):
        if packages or exclude:
            raise DataError(f"data.packages = {list(packages)} (excluding {list(exclude)}) leaves "
                            f"{len(train)} training and {len(val)} validation files under {root}; choose "
                            f"more or larger packages.")
        raise DataError(f"found no readable .py files under {root}; the stdlib source is missing "
                        f"from this Python install — use data.source='file' with data.path=...")
    info = {"root": str(root), "train_files": len(train), "val_files": len(val)}
    if packages:
        info["packages"] = list(packages)
    if exclude:
        info["exclude_packages"] = list(exclude)
    return FILE_SEPARATOR.join(train), FILE_SEPARATOR.join(val), info


def read_file(path: str, fraction: float) -> tuple[str, str, dict]:
    if not path:
        raise DataError("data.source = 'file' needs data.path; pass --set data.path=/path/to/text.txt.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"data file {p} does not exist; check data.path.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {p} is not UTF-8 text ({e}); convert it to UTF-8.") from None
    if len(text) < 100:
        raise DataError(f"data file {p} has only {len(text)} characters; a text model needs at "
                        f"least a few thousand.")
    cut = int(len(text) * (1 - fraction))
    return text[:cut], text[cut:], {"path": str(p.resolve()), "chars": len(text)}


# --------------------------------------------------------------------------- tokenizer


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def build_vocab(cps: np.ndarray, min_count: int) -> list[str]:
    values, counts = np.unique(cps, return_counts=True)
    keep = values[counts >= min_count]
    vocab = [chr(int(c)) for c in keep]
    if len(keep) < len(values) and UNK not in vocab:
        vocab.append(UNK)
    return vocab


def encode(text: str, vocab: list[str]) -> np.ndarray:
    cps = codepoints(text)
    table = {ord(ch): i for i, ch in enumerate(vocab)}
    unk = table.get(ord(UNK), -1)
    top = max(int(cps.max(initial=0)), max(table)) + 1
    lut = np.full(top, unk, dtype=np.int64)
    for cp, i in table.items():
        lut[cp] = i
    ids = lut[cps]
    if (ids < 0).any():
        bad = chr(int(cps[np.argmax(ids < 0)]))
        raise DataError(f"character {bad!r} is not in the vocabulary; lower data.min_char_count or "
                        f"train on text that contains it.")
    return ids.astype(np.uint16 if len(vocab) < 65536 else np.uint32)


def unigram_nats(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats/char) on val of character frequencies counted on train (add-one)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val].mean())


# --------------------------------------------------------------------------- cache


def cache_root(cfg: TextDataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("TRAINWELL_CACHE", Path.home() / ".cache" / "trainwell"))


def source_key(cfg: TextDataConfig, vocab: list[str] | None = None) -> str:
    """Identity of the raw data + tokenizer settings; changes invalidate the cache."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{cfg.source}|{cfg.val_fraction}|{cfg.min_char_count}".encode())
    if cfg.packages or cfg.exclude_packages:
        h.update(f"|packages={sorted(cfg.packages)}|exclude={sorted(cfg.exclude_packages)}".encode())
    if vocab is not None:
        h.update(("vocab|" + "".join(vocab)).encode("utf-8", "surrogatepass"))
    if cfg.source == "stdlib":
        root, files = stdlib_files()
        h.update(str(root).encode())
        for p in files:
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    else:
        if not cfg.path:
            raise DataError("data.source = 'file' needs data.path; pass --set data.path=/path/to/text.txt.")
        p = Path(cfg.path).expanduser()
        if not p.is_file():
            raise DataError(f"data file {p} does not exist; check data.path.")
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:20]


def load_text(cfg: TextDataConfig, vocab: list[str] | None = None) -> TextCorpus:
    """Read, tokenize and cache the corpus (later calls load the cache in milliseconds).

    ``vocab`` fixes the vocabulary (transfer: a pretrained model's), instead of building it
    from this text; characters outside it become <unk> when it has one."""
    folder = cache_root(cfg) / f"text-{source_key(cfg, vocab)}"
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return TextCorpus(np.load(folder / "train.npy"), np.load(folder / "val.npy"),
                              meta["vocab"], meta["unigram_nats"], meta["info"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    if cfg.source == "stdlib":
        train_text, val_text, info = read_stdlib(cfg.val_fraction, cfg.packages, cfg.exclude_packages)
    else:
        train_text, val_text, info = read_file(cfg.path, cfg.val_fraction)
    # Vocabulary from the whole text (as nanoGPT does), so every val character is known.
    if vocab is None:
        vocab = build_vocab(codepoints(train_text + val_text), cfg.min_char_count)
    train, val = encode(train_text, vocab), encode(val_text, vocab)
    if len(val) <= cfg.context + 1:
        raise DataError(f"the validation split has only {len(val)} characters, fewer than one "
                        f"sequence of data.context={cfg.context}; raise data.val_fraction or use more text.")
    info.update(train_chars=int(len(train)), val_chars=int(len(val)))
    corpus = TextCorpus(train, val, vocab, unigram_nats(train, val, len(vocab)), info)
    save_cache(folder, corpus)
    return corpus


def save_cache(folder: Path, corpus: TextCorpus) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "train.npy", corpus.train)
        np.save(tmp / "val.npy", corpus.val)
        (tmp / "meta.json").write_text(json.dumps(
            {"vocab": corpus.vocab, "unigram_nats": corpus.unigram_nats, "info": corpus.info}))
        if folder.exists():
            return  # another process won the race; its cache is equivalent
        os.replace(tmp, folder)
    except OSError:
        pass  # the cache is an optimisation; training proceeds without it
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def bits_per_char(nats: float) -> float:
    return nats / math.log(2)
