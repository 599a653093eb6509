"""Splitting one machine's data into silos, for experiments (a real silo brings its own data).

- ``iid``: every training sample goes to a silo drawn uniformly (a shuffled, even split).
- ``dirichlet``: label skew as in Hsu, Qi & Brown 2019 ("Measuring the effects of non-identical data
  distribution for federated visual classification"): for each class, the shares of its samples that
  go to the K silos are drawn from Dirichlet(alpha * 1_K). alpha = 0.1 leaves most silos with one or
  two classes; alpha -> infinity is iid. Redrawn until every silo holds at least 2 samples.
- ``folders``: silo i reads entry i (sorted) of ``federated.silo_data``: an image folder, a table or a
  text file, exactly what `trainwell federate client --data PATH` reads on a real silo.
- ``packages``: text; silo i trains on the stdlib top-level package ``federated.packages[i]``.

The split is a pure function of (data, silos, seed): every silo process computes its own share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.data.samples import IndexBatches
from trainwell.data.windows import TokenWindows
from trainwell.errors import ConfigError


def iid(n: int, silos: int, seed: int) -> list[np.ndarray]:
    """Indices 0..n-1 shuffled and cut into ``silos`` near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, silos)]


def dirichlet(labels: np.ndarray, silos: int, alpha: float, seed: int, min_size: int = 2,
              tries: int = 1000) -> list[np.ndarray]:
    """Per class, its samples are dealt to silos in proportions ~ Dirichlet(alpha)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(tries):
        parts: list[list[int]] = [[] for _ in range(silos)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(silos, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for silo, chunk in enumerate(np.split(idx, cuts)):
                parts[silo].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(f"federated.alpha = {alpha} left a silo with fewer than {min_size} samples in {tries} "
                      f"draws; raise federated.alpha or lower federated.silos.")


def folder_entries(path: str, silos: int) -> list[Path]:
    """The silo data of partition 'folders': the entries of ``path`` (hidden ones skipped), sorted."""
    root = Path(path).expanduser()
    if not path or not root.is_dir():
        raise ConfigError(f"federated.partition = 'folders' needs federated.silo_data, a folder with one entry "
                          f"per silo; {root if path else 'none'} is not a folder.")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    if len(entries) != silos:
        raise ConfigError(f"federated.silo_data {root} holds {len(entries)} entries but federated.silos = "
                          f"{silos}; give one entry (folder or file) per silo.")
    return entries


def silo_names(cfg: Config) -> list[str]:
    f = cfg.federated
    if f.partition == "folders":
        return [p.name for p in folder_entries(f.silo_data, f.silos)]
    if f.partition == "packages":
        return list(f.packages)
    return [f"silo-{i}" for i in range(f.silos)]


def check(cfg: Config) -> None:
    """Settings that cannot work, found before anything starts."""
    f, name = cfg.federated, cfg.data.name
    if name not in ("text", "sklearn", "image_folder", "table"):
        raise ConfigError(f"federated training takes supervised (sklearn, image_folder, table) or text recipes; "
                          f"data.name = {name!r} is neither.")
    if f.partition == "dirichlet" and (name == "text" or cfg.objective.name != "classify"):
        raise ConfigError("federated.partition = 'dirichlet' splits by label and needs a classification recipe; "
                          "use 'iid' or 'folders'.")
    if f.partition == "packages":
        if name != "text" or cfg.data.source != "stdlib":
            raise ConfigError("federated.partition = 'packages' splits the stdlib source and needs data.name = "
                              "'text' with data.source = 'stdlib'.")
        if len(f.packages) != f.silos:
            raise ConfigError(f"federated.partition = 'packages' needs one package per silo: federated.packages "
                              f"lists {len(f.packages)}, federated.silos = {f.silos}.")
    if f.partition == "folders":
        folder_entries(f.silo_data, f.silos)
    if f.clients_per_round > f.silos:
        raise ConfigError(f"federated.clients_per_round = {f.clients_per_round} is more than federated.silos = "
                          f"{f.silos}.")
    if f.attack != "none" and f.attackers > f.silos:
        raise ConfigError(f"federated.attackers = {f.attackers} is more than federated.silos = {f.silos}.")
    if f.attack == "flip_labels" and cfg.objective.name != "classify":
        raise ConfigError("federated.attack = 'flip_labels' needs a classification recipe.")


def silo_source(cfg: Config, job: Any, silo: int) -> Any:
    """The silo's share of the training data of ``job`` (built from the whole recipe) as its source."""
    f = cfg.federated
    source = job.source
    if f.partition == "packages":  # the training files of one package (the held-out files stay held out)
        from trainwell.data.text import encode, load_text, read_stdlib
        from trainwell.paradigms.transfer import pretraining_corpus

        # the ids must mean what they mean to the model: the pretrained vocabulary, or that of all silos' text
        pre = pretraining_corpus(cfg.train.init_from, cfg.data.cache_dir) if cfg.train.init_from else None
        vocab = pre.vocab if pre is not None else load_text(cfg.data).vocab
        text, _, _ = read_stdlib(cfg.data.val_fraction, [f.packages[silo]], need_val=False)
        return TokenWindows(encode(text, vocab), context=cfg.data.context, batch_size=cfg.train.batch_size,
                            seed=cfg.train.seed)
    if isinstance(source, IndexBatches):
        if f.partition == "dirichlet":
            labels = source.fetch(torch.arange(source.n))["target"].numpy()
            parts = dirichlet(labels, f.silos, f.alpha, f.partition_seed)
        else:
            parts = iid(source.n, f.silos, f.partition_seed)
        keep = torch.from_numpy(parts[silo])
        fetch = source.fetch
        return IndexBatches(len(keep), lambda idx: fetch(keep[idx]), batch_size=source.batch_size,
                            seed=source.seed)
    if isinstance(source, TokenWindows):  # iid text: contiguous, equal stretches of the token stream
        tokens = source.tokens.numpy()
        part = np.array_split(tokens, f.silos)[silo]
        return TokenWindows(part, context=source.context, batch_size=source.batch_size, seed=source.seed)
    raise ConfigError(f"federated.partition = {f.partition!r} cannot split this recipe's data source "
                      f"({type(source).__name__}); use 'folders' with one data entry per silo.")
