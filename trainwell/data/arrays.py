"""In-memory datasets of samples: scikit-learn's bundled data, image folders, CSV/Parquet tables.

Everything ends up as float32 features ``x`` (N, *feature_shape) and labels ``y`` (N,) with a
fixed train/test split (stratified for classification, seeded by ``data.split_seed``), so the
same model, objective and loop serve all three. Bad files get one message naming the file or
row and saying how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainwell.config.schema import ArrayDataConfig
from trainwell.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class ArrayDataset:
    x_train: np.ndarray  # (N_train, *feature_shape) float32, standardized if asked
    y_train: np.ndarray  # (N_train,) int64 class ids or float32 targets
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classify" | "regress"
    classes: list[str] = field(default_factory=list)
    raw_train: np.ndarray | None = None  # unscaled features, for the scikit-learn baselines
    raw_test: np.ndarray | None = None
    y_mean: float = 0.0  # regression targets are standardized; these undo it
    y_std: float = 1.0
    is_image: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    is_text: bool = False  # x holds strings (data.text); the model's tokenizer makes ids of them

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# --------------------------------------------------------------------------- readers


def read_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str], bool, str]:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "iris": datasets.load_iris, "wine": datasets.load_wine,
              "breast_cancer": datasets.load_breast_cancer, "diabetes": datasets.load_diabetes}[name]
    bunch = loader()
    if name == "digits":
        x = bunch.images[:, None, :, :].astype(np.float32)  # (N, 1, 8, 8), values 0..16
        return x, bunch.target, [str(c) for c in bunch.target_names], True, "classify"
    if name == "diabetes":
        return bunch.data.astype(np.float32), bunch.target.astype(np.float32), [], False, "regress"
    return (bunch.data.astype(np.float32), bunch.target, [str(c) for c in bunch.target_names], False,
            "classify")


def read_image_folder(path: str, size: int, grayscale: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; set data.path to a folder with one "
                        f"sub-folder of images per class.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders; put each class's images in "
                        f"its own sub-folder (e.g. {root}/cat/1.png).")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if grayscale else "RGB")
                    if not size:
                        size = im.size[0]
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.BILINEAR)
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise DataError(f"cannot read image {f} ({e}); remove or replace that file.") from None
            images.append(arr[None] if grayscale else arr.transpose(2, 0, 1))  # (C, H, W)
            labels.append(label)
    if not images:
        raise DataError(f"image folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return np.stack(images), np.array(labels, dtype=np.int64), classes


def read_text_table(path: str, text: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The text column (as an object array of str) and the raw label column of a CSV/Parquet file."""
    p = Path(path).expanduser()
    table = _read_arrow(p)
    for role, name in (("text", text), ("label", label)):
        if name not in table.column_names:
            raise DataError(f"table {p} has no {role} column '{name}'; its columns are "
                            f"{', '.join(table.column_names)} — set data.{role}.")
    texts = table.column(text).to_pylist()
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise DataError(f"table {p}: text column '{text}' is empty in data row {empty[0] + 1}; fill or drop it.")
    return np.array(texts, dtype=object), table.column(label).to_numpy(zero_copy_only=False)


def _read_arrow(p: Path):
    import pyarrow as pa

    if not p.is_file():
        raise DataError(f"table {p} does not exist; set data.path to a .csv or .parquet file.")
    try:
        if p.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(p)
        elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
            import pyarrow.csv as pcsv

            delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
            table = pcsv.read_csv(p, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        else:
            raise DataError(f"table {p} is neither .csv nor .parquet; convert it to one of them.")
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read table {p}: {str(e).splitlines()[0]}; check the file's format.") from None
    if table.num_rows == 0:
        raise DataError(f"table {p} has no rows.")
    return table


def read_table(path: str, label: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Numeric feature matrix and the raw label column of a CSV or Parquet file."""
    import pyarrow as pa

    p = Path(path).expanduser()
    table = _read_arrow(p)
    if label not in table.column_names:
        from difflib import get_close_matches

        close = get_close_matches(label, table.column_names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"table {p} has no label column '{label}'{hint}; its columns are "
                        f"{', '.join(table.column_names)} — set data.label.")
    features = [c for c in table.column_names if c != label]
    cols = []
    for name in features:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            raise DataError(f"table {p}: feature column '{name}' is {col.type}, not numeric; encode it as "
                            f"numbers or drop it.")
        arr = col.to_numpy(zero_copy_only=False).astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise DataError(f"table {p}: column '{name}' has a missing or non-finite value in data row "
                            f"{bad[0] + 1}; fill or drop such rows.")
        cols.append(arr)
    if not cols:
        raise DataError(f"table {p} has no feature columns besides the label '{label}'.")
    y = table.column(label).to_numpy(zero_copy_only=False)
    return np.stack(cols, axis=1), y, features, [str(v) for v in y]


# --------------------------------------------------------------------------- split & scale


def decide_task(y: np.ndarray, requested: str) -> str:
    """Text and booleans classify; numbers classify only when they are whole and take few values
    (at most 50), otherwise they are a quantity to regress. data.task overrides the guess."""
    if requested != "auto":
        return requested
    if y.dtype.kind in "bOUS":
        return "classify"
    whole = y.dtype.kind in "iu" or bool(np.all(np.mod(y, 1) == 0))
    return "classify" if whole and len(np.unique(y)) <= 50 else "regress"


def load_arrays(cfg: ArrayDataConfig) -> ArrayDataset:
    from sklearn.model_selection import train_test_split

    classes: list[str] = []
    if cfg.name == "sklearn":
        x, y, classes, is_image, task = read_sklearn(cfg.dataset)
        source = f"sklearn:{cfg.dataset}"
    elif cfg.name == "image_folder":
        x, y, classes = read_image_folder(cfg.path, cfg.image_size, cfg.grayscale)
        is_image, task, source = True, "classify", str(Path(cfg.path).expanduser())
    elif cfg.text:
        x, y = read_text_table(cfg.path, cfg.text, cfg.label)
        is_image, source = False, str(Path(cfg.path).expanduser())
        task = decide_task(y, cfg.task)
    else:
        x, y, features, _ = read_table(cfg.path, cfg.label)
        is_image, source = False, str(Path(cfg.path).expanduser())
        task = decide_task(y, cfg.task)
    if cfg.task not in ("auto", task):
        raise DataError(f"{source} is a {task} dataset; data.task = '{cfg.task}' does not fit it — "
                        f"set data.task = 'auto'.")
    where = source
    if task == "classify" and cfg.classes:
        y, classes = fixed_classes(y, classes if cfg.name != "table" else [], cfg.classes, where)
        counts = np.bincount(y)
        present = np.flatnonzero(counts)
        if counts[present].min() < 2:
            raise DataError(f"{where}: class {classes[int(present[counts[present].argmin()])]!r} has a single "
                            f"sample; a stratified split needs at least 2 per class.")
    elif task == "classify":
        values, y = np.unique(y, return_inverse=True)
        classes = classes if classes and len(classes) == len(values) else [str(v) for v in values]
        if len(values) < 2:
            raise DataError(f"{where} has only one class ({classes[0]!r}); classification needs at least two.")
        counts = np.bincount(y)
        if counts.min() < 2:
            raise DataError(f"{where}: class {classes[int(counts.argmin())]!r} has a single sample; a "
                            f"stratified split needs at least 2 per class.")
        y = y.astype(np.int64)
    else:
        try:
            y = y.astype(np.float32)
        except ValueError:
            raise DataError(f"{where}: the label column holds text, so it cannot be regressed; set "
                            f"data.task = 'classify'.") from None
        if not np.all(np.isfinite(y)):
            raise DataError(f"{where}: the label has a missing value in data row "
                            f"{int(np.flatnonzero(~np.isfinite(y))[0]) + 1}; fill or drop it.")
    if len(y) < 10:
        raise DataError(f"{where} has only {len(y)} samples; at least 10 are needed for a train/test split.")
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=cfg.test_fraction, random_state=cfg.split_seed,
                              stratify=y if task == "classify" else None)
    x_train, x_test, y_train, y_test = x[tr], x[te], y[tr], y[te]
    raw_train, raw_test = x_train.reshape(len(tr), -1), x_test.reshape(len(te), -1)
    if cfg.text:
        info = {"source": source, "task": task, "train": int(len(tr)), "test": int(len(te)),
                "split_seed": cfg.split_seed, "test_indices_sha": _digest(te), "classes": len(classes)}
        return ArrayDataset(x_train, y_train, x_test, y_test, task, classes, raw_train, raw_test,
                            is_text=True, info=info)
    if cfg.standardize:
        # images: one mean/std for all pixels keeps their spatial structure; tables: per column
        axis = None if is_image else 0
        mean, std = x_train.mean(axis=axis), x_train.std(axis=axis) + 1e-6
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y_mean, y_std = 0.0, 1.0
    if task == "regress" and cfg.standardize:
        y_mean, y_std = float(y_train.mean()), float(y_train.std() + 1e-6)
        y_train, y_test = (y_train - y_mean) / y_std, (y_test - y_mean) / y_std
    info = {"source": source, "task": task, "train": int(len(tr)), "test": int(len(te)),
            "split_seed": cfg.split_seed, "test_indices_sha": _digest(te)}
    if classes:
        info["classes"] = len(classes)
    return ArrayDataset(x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test, task,
                        classes, raw_train, raw_test, y_mean, y_std, is_image, info)


def fixed_classes(y: np.ndarray, names: list[str], wanted: list[str], where: str) -> tuple[np.ndarray, list[str]]:
    """Labels as ids into ``wanted`` (data.classes). ``y`` holds raw label values, or ids into ``names``
    when the reader named the classes itself (image folders, scikit-learn)."""
    labels = np.asarray(names, dtype=object)[y] if names else y
    text = np.array([str(v) for v in labels], dtype=object)
    index = {name: i for i, name in enumerate(wanted)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise DataError(f"{where} holds class {unknown[0]!r}, which data.classes ({', '.join(wanted)}) does not "
                        f"list; add it there.")
    return np.array([index[t] for t in text], dtype=np.int64), list(wanted)


def _digest(idx: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.sort(idx).astype(np.int64).tobytes()).hexdigest()[:12]
