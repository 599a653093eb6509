"""Code-completion rows built from this Python's standard library, and a program that grades them.

Rows (what the shipped preference recipes train on when ``data.path`` is empty):

- **prompt**: the first lines of a stdlib function, dedented to column 0: its ``def`` line and the
  first line of its body (only prompts that parse on their own and fit ``prompt_chars``);
- **completion**: the next ``completion_chars`` characters of that function's body (SFT's target);
- **chosen / rejected** (preference rows): the true completion, and a copy with a small corruption
  (a few characters deleted, swapped or inserted) that lowers its grade - a pair is kept only then.

Functions of held-out files (the same hash of the file path as the pretraining text uses,
trainwell/data/text.py) form the evaluation rows, so evaluation prompts come from files the
pretrained model never saw. Rows are built once and cached as JSONL.

The grade, :func:`valid_fraction`: the share of a completion's code (its characters but whitespace
and comments) up to the last cut (a line end, or the end) at which ``prompt + completion[:cut]`` still
parses as Python (the parser itself is the judge). It is the gold reward of bench/preferences.py:
exact, cheap, graded (so two completions usually differ), correlated with code quality without being
likelihood, and never shown to a reward model, which only sees comparisons labelled from it. It
checks syntax only: a policy optimised against it writes short statements that parse, not working code.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import random
import re
import tokenize
import warnings
from pathlib import Path
from typing import Any

from trainwell.data.text import is_val_file, stdlib_files

CACHE_VERSION = 2  # 2: valid_fraction credits code only (the preference pairs are kept by it)
# a one-line def header: indentation, `def name(...)...:`
DEF_LINE = re.compile(r"^([ \t]*)def [A-Za-z_]\w*\([^\n]*\)[^\n]*:[ \t]*\n", re.M)
NOISE = "()[]{}:,.=+ \n"


def parses(source: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for odd escapes in generated text
        try:
            compile(source, "<completion>", "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
            return True
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False


def valid_fraction(prompt: str, completion: str) -> float:
    """Share of ``completion``'s code that parses after ``prompt``: its characters up to the last line
    end (or its end) at which ``prompt + completion[:cut]`` parses, counting neither whitespace nor
    comments, over all its characters but whitespace; 0 for a completion without any. Comments and
    blank lines parse whatever they say, so crediting them paid a policy for writing no code (GRPO on
    the gold reward learned exactly that, bench/RESULTS.md). The prompt is dedented by its first line's
    indentation first (lines that do not start with it are left as they are)."""
    total = solid(completion)
    if not total:
        return 0.0
    indent = prompt[:len(prompt) - len(prompt.lstrip(" \t"))]
    cuts = [i + 1 for i, ch in enumerate(completion) if ch == "\n"]
    if not cuts or cuts[-1] != len(completion):
        cuts.append(len(completion))
    head = dedent(prompt, indent)
    for cut in reversed(cuts):  # longest first: a valid completion costs one parse
        text = dedent(prompt + completion[:cut], indent)
        if parses(text):
            code = solid(completion[:cut]) - comment_chars(text, head, completion[:cut])
            return max(0, code) / total
    return 0.0


def dedent(text: str, indent: str) -> str:
    if not indent:
        return text
    return "".join(line[len(indent):] if line.startswith(indent) else line for line in text.splitlines(keepends=True))


def comment_chars(source: str, head: str, part: str) -> int:
    """Non-blank characters of the comments in ``source`` (which parses) after its first ``len(head)``
    characters, i.e. in the completion ``part`` that follows the prompt ``head``."""
    row, col = head.count("\n") + 1, len(head) - (head.rfind("\n") + 1)  # where the completion starts (1-based row)
    try:
        return sum(solid(t.string) for t in tokenize.generate_tokens(io.StringIO(source).readline)
                   if t.type == tokenize.COMMENT and t.start >= (row, col))
    except (tokenize.TokenError, SyntaxError):  # parses but does not tokenize: count comment lines instead
        return sum(solid(line) for line in part.splitlines() if line.strip().startswith("#"))


def solid(text: str) -> int:
    """Characters of ``text`` that are not whitespace."""
    return sum(not ch.isspace() for ch in text)


def code_valid(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
    """Reward function (TRL's reward_funcs signature): :func:`valid_fraction` of each completion."""
    return [valid_fraction(p, c) for p, c in zip(prompts, completions)]


# --------------------------------------------------------------------------- rows


def snippets(text: str, prompt_chars: int, completion_chars: int) -> list[dict[str, str]]:
    """(prompt, completion) rows from the functions of one source file."""
    out = []
    for m in DEF_LINE.finditer(text):
        indent = m.group(1)
        body: list[str] = []
        for line in text[m.end():].splitlines(keepends=True):
            if line.strip() and not (line.startswith(indent) and len(line) - len(line.lstrip()) > len(indent)):
                break  # back at the def's own level: the function ended
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip(" \t"))
            if sum(map(len, body)) > prompt_chars + completion_chars:
                break
        first = next((i for i, line in enumerate(body) if line.strip()), None)
        if first is None:
            continue
        header = m.group(0)[len(indent):]
        prompt = header + "".join(body[:first + 1])
        rest = "".join(body[first + 1:])[:completion_chars]
        if len(prompt) > prompt_chars or len(rest.strip()) < 16 or not parses(prompt):
            continue
        out.append({"prompt": prompt, "completion": rest})
    return out


def corrupt(text: str, rng: random.Random) -> str:
    """A small random edit: delete a span of 1-6 characters, swap two, or insert a syntax character."""
    i = rng.randrange(len(text))
    kind = rng.randrange(3)
    if kind == 0:
        return text[:i] + text[i + rng.randint(1, 6):]
    if kind == 1:
        j = rng.randrange(len(text))
        chars = list(text)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    return text[:i] + rng.choice(NOISE) + text[i:]


def pair_of(row: dict[str, str], rng: random.Random) -> dict[str, str] | None:
    """A preference row: the true completion over a corrupted one that grades lower (or None)."""
    good = valid_fraction(row["prompt"], row["completion"])
    for _ in range(5):
        bad = corrupt(row["completion"], rng)
        if bad and valid_fraction(row["prompt"], bad) < good:
            return {"prompt": row["prompt"], "chosen": row["completion"], "rejected": bad}
    return None


def build_rows(kind: str, prompt_chars: int, completion_chars: int, eval_fraction: float
               ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, eval rows) of ``kind`` (sft, pairs or prompts) from the stdlib's functions."""
    root, files = stdlib_files()
    train: list[dict[str, str]] = []
    held: list[dict[str, str]] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root).as_posix()
        (held if is_val_file(rel, eval_fraction) else train).extend(snippets(text, prompt_chars, completion_chars))
    if kind != "pairs":
        return train, held
    rng = random.Random(0)  # fixed: the same pairs on every machine with this stdlib
    pairs = lambda rows: [p for p in (pair_of(r, rng) for r in rows) if p is not None]  # noqa: E731
    return pairs(train), pairs(held)


def stdlib_rows(kind: str, *, prompt_chars: int, completion_chars: int, eval_fraction: float,
                cache_dir: str = "") -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The built-in rows, cached as JSONL under $TRAINWELL_CACHE (built once: ~2 s per 1,800 files)."""
    root, files = stdlib_files()
    key = hashlib.sha256(f"v{CACHE_VERSION}|{kind}|{prompt_chars}|{completion_chars}|{eval_fraction}|{root}|"
                         f"{len(files)}".encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else Path(
        os.environ.get("TRAINWELL_CACHE", Path.home() / ".cache" / "trainwell"))
    folder = base / f"code-{kind}-{key}"
    try:
        return tuple(read_jsonl(folder / f"{split}.jsonl") for split in ("train", "eval"))  # type: ignore[return-value]
    except (OSError, ValueError):
        pass
    train, held = build_rows(kind, prompt_chars, completion_chars, eval_fraction)
    try:
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", train), ("eval", held)):
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if not folder.exists():
            os.replace(tmp, folder)
    except OSError:
        pass  # the cache is an optimisation
    return train, held


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
