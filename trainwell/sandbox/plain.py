"""Plain data across the sandbox boundary: values as tagged JSON, rebuilt as built-in types only.

A candidate's return value crosses to the judge (the trainer, or the test process) as text. Whatever
the candidate's process writes, :func:`decode` builds only ``None``, ``bool``, ``int``, ``float``,
``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set`` and ``frozenset`` from it, so no
object of the candidate's (an ``__eq__`` that is always true, a subclass of ``int``) ever reaches the
comparison. The encoder runs inside the candidate and may be tampered with; that only changes which
plain value arrives, which the candidate could have returned honestly anyway.

This module uses the standard library only: the sandbox's process (trainwell/sandbox/zygote.py)
imports it by file path, without trainwell.

Encoding: JSON scalars stand for themselves (ints beyond 2**53 as {"i": hex}, which sidesteps
Python's 4,300-digit limit on decimal ints); containers are one-key objects: {"l": [...]},
{"t": [...]}, {"d": [[k, v], ...]}, {"s": [...]}, {"f": [...]}, {"b": hex}, {"c": [re, im]}.
"""

from __future__ import annotations

import json
from typing import Any

BIG = 2 ** 53
MAX_DEPTH = 100


class NotPlain(TypeError):
    """A value that is not plain data (a generator, a function, an instance of a class)."""


def to_tree(value: Any, depth: int = 0) -> Any:
    """The JSON-able tree of ``value``; exact built-in types only (a subclass is not plain)."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"nested deeper than {MAX_DEPTH}")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -BIG < value < BIG else {"i": hex(value)}
    if t is float:
        return value
    if t is list or t is tuple or t is set or t is frozenset:
        items = [to_tree(v, depth + 1) for v in value]
        return {{list: "l", tuple: "t", set: "s", frozenset: "f"}[t]: items}
    if t is dict:
        return {"d": [[to_tree(k, depth + 1), to_tree(v, depth + 1)] for k, v in value.items()]}
    if t is bytes:
        return {"b": value.hex()}
    if t is complex:
        return {"c": [value.real, value.imag]}
    raise NotPlain(f"a {t.__name__} is not plain data")


def encode(value: Any) -> str:
    return json.dumps(to_tree(value), separators=(",", ":"))


def from_tree(tree: Any, depth: int = 0) -> Any:
    """Rebuild a value from a tree that anyone may have written: anything unexpected raises ValueError."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    t = type(tree)
    if tree is None or t is bool or t is str or t is int or t is float:
        return tree
    if t is not dict or len(tree) != 1:
        raise ValueError(f"not an encoded value: a {t.__name__}")
    (tag, body), = tree.items()
    if tag == "i" and type(body) is str:
        return int(body, 16)
    if tag == "b" and type(body) is str:
        return bytes.fromhex(body)
    if tag == "c" and type(body) is list and len(body) == 2 and all(type(x) in (int, float) for x in body):
        return complex(body[0], body[1])
    if type(body) is not list:
        raise ValueError(f"bad body for tag {tag!r}")
    if tag == "d":
        out = {}
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("a dict item is not a pair")
            out[from_tree(pair[0], depth + 1)] = from_tree(pair[1], depth + 1)  # unhashable key: TypeError
        return out
    kinds = {"l": list, "t": tuple, "s": set, "f": frozenset}
    if tag not in kinds:
        raise ValueError(f"unknown tag {tag!r}")
    return kinds[tag](from_tree(v, depth + 1) for v in body)


def decode(text: str | bytes) -> Any:
    """The plain value encoded in ``text``; ValueError for anything that is not one."""
    try:
        return from_tree(json.loads(text))
    except (ValueError, TypeError, RecursionError) as e:
        raise ValueError(f"not plain data: {e}") from None


def same(a: Any, b: Any, rel_tol: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    """Equal as data: the same types all the way down (1 is not 1.0 nor True), floats within a
    tolerance (NaN equals NaN). Both sides must come from :func:`decode` or the judge's own data."""
    ta, tb = type(a), type(b)
    if ta is not tb:
        return False
    if ta is float:
        if a != a or b != b:
            return a != a and b != b
        return abs(a - b) <= max(rel_tol * max(abs(a), abs(b)), abs_tol)
    if ta is complex:
        return same(a.real, b.real, rel_tol, abs_tol) and same(a.imag, b.imag, rel_tol, abs_tol)
    if ta is list or ta is tuple:
        return len(a) == len(b) and all(same(x, y, rel_tol, abs_tol) for x, y in zip(a, b))
    if ta is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k], rel_tol, abs_tol) for k in a)
    return bool(a == b)  # None, bool, int, str, bytes, set, frozenset: built-in equality
