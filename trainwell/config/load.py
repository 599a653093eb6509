"""Load recipes (TOML) into the typed config tree, apply ``--set`` overrides, validate.

Every error names the key, says what was expected, and suggests the closest valid key or
choice, before any work starts. No heavy imports here.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainwell.config.imports import is_import_path
from trainwell.config.schema import NON_TRAJECTORY, VARIANTS, Config, Invalid, opt
from trainwell.errors import ConfigError


# --------------------------------------------------------------------------- recipes


def recipe_names() -> list[str]:
    """Names of the recipes shipped inside the package."""
    files = resources.files("trainwell.recipes")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def recipe_text(recipe: str) -> tuple[str, str]:
    """Return (source description, TOML text) for a shipped recipe name or a file path."""
    path = Path(recipe)
    if recipe.endswith(".toml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {recipe} does not exist; pass a shipped recipe name "
                              f"({', '.join(recipe_names())}) or the path of a .toml file.")
        return str(path), path.read_text(encoding="utf-8")
    names = recipe_names()
    if recipe not in names:
        raise ConfigError(f"unknown recipe '{recipe}'{_suggest(recipe, names)}; "
                          f"`trainwell recipes` lists the shipped ones, or pass a .toml path.")
    return f"recipe '{recipe}'", (resources.files("trainwell.recipes") / f"{recipe}.toml").read_text(
        encoding="utf-8")


def parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}; fix the syntax at that line.") from None


def load_config(recipe: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                *, text: str | None = None) -> Config:
    """Build a validated :class:`Config` from a recipe name/path (or TOML text) plus overrides."""
    if text is not None:
        where, raw = "config", parse_toml(text, "config")
    else:
        where, body = recipe_text(recipe or "default")
        raw = parse_toml(body, where)
    names = {section: raw.get(section, {}).get("name") for section in VARIANTS if isinstance(raw.get(section), dict)}
    for item in overrides:
        apply_override(raw, item)
    set_keys = frozenset(item.split("=", 1)[0].strip() for item in overrides)
    drop_switched_keys(raw, names, set_keys)
    cfg = build(Config, raw, "", where, set_keys)
    validate(cfg, where, set_keys)
    return cfg


def validate(cfg: Config, where: str = "config", set_keys: frozenset[str] = frozenset()) -> None:
    """The cross-field checks of every section (schema.py, next to each dataclass) as one ConfigError
    that names the key to change."""
    try:
        cfg.check()
    except Invalid as e:
        raise ConfigError(f"{origin(e.key, where, set_keys)}: {e.message}.") from None


def drop_switched_keys(raw: dict[str, Any], recipe_names: dict[str, Any], set_keys: frozenset[str]) -> None:
    """``--set model.name=hf_causal`` on a GPT recipe: the recipe's keys of the old variant that the new
    one does not have (n_layer, ...) go with it; keys given with --set are still checked."""
    for section, old in recipe_names.items():
        table = raw.get(section)
        new = table.get("name") if isinstance(table, dict) else None
        if f"{section}.name" not in set_keys or new == old or not isinstance(new, str) or is_import_path(new):
            continue
        cls = VARIANTS[section].get(new)
        if cls is None:
            continue  # an unknown name: build() says so
        known = {f.name for f in fields(cls)}
        for key in [k for k in table if k not in known and f"{section}.{k}" not in set_keys]:
            del table[key]


# --------------------------------------------------------------------------- overrides


def parse_value(text: str) -> Any:
    """A --set value is a TOML value (3e-4, true, [1, 2], "x"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} must look like section.key=value (e.g. optim.lr=3e-4).")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {item!r}: the key '{key}' has an empty part.")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section.")
        node = child
    node[parts[-1]] = parse_value(value.strip())


# --------------------------------------------------------------------------- validation


def _suggest(word: str, options: list[str] | tuple[str, ...], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def section_class(section: str, raw: dict[str, Any], default_cls: type, where: str,
                  set_keys: frozenset[str] = frozenset()) -> type:
    """For a variant section, the dataclass picked by its ``name`` key."""
    variants = VARIANTS.get(section)
    if variants is None:
        return default_cls
    name = raw.get("name", default_cls().name)
    if not isinstance(name, str):
        raise ConfigError(f"{origin(section + '.name', where, set_keys)}: '{section}.name' must be a string, got "
                          f"{name!r}; choose one of: {', '.join(variants)}, or a 'module:function'.")
    if is_import_path(name):  # the user's own builder: its keys pass through
        return import_section(section, raw)
    if name not in variants:
        raise ConfigError(f"{origin(section + '.name', where, set_keys)}: {section}.name = {name!r} is not known{_suggest(str(name), list(variants))}; "
                          f"choose one of: {', '.join(variants)}.")
    return variants[name]


_IMPORT_SECTIONS: dict[tuple[Any, ...], type] = {}


def import_section(section: str, raw: dict[str, Any]) -> type:
    """A dataclass for a section whose ``name`` is an import path: ``name`` plus every other key the
    recipe gives, typed by its value (the same keys and types give the same class, so configs
    compare equal and round-trip through config.toml)."""
    keys = tuple(sorted((k, type(v).__name__) for k, v in raw.items() if k != "name"))
    cls = _IMPORT_SECTIONS.get((section, keys))
    if cls is None:
        def typed(v: Any) -> Any:
            return list[type(v[0])] if isinstance(v, list) and v else type(v)

        spec = [("name", str, opt("", f"the user's {section} builder, 'module:function'"))]
        spec += [(k, typed(raw[k]), opt(raw[k], "passed through to the user's builder"))
                 for k, _ in keys]
        cls = dataclasses.make_dataclass(f"Imported{section.title()}Config", spec)
        _IMPORT_SECTIONS[(section, keys)] = cls
    return cls


def origin(key: str, where: str, set_keys: frozenset[str]) -> str:
    """Where a bad value came from: the --set flag or the recipe file."""
    hit = key in set_keys or any(k.startswith(key + ".") for k in set_keys)
    return f"--set {key}" if hit else where


def build(cls: type, raw: Any, prefix: str, where: str, set_keys: frozenset[str] = frozenset()) -> Any:
    """Recursively turn a TOML table into dataclass ``cls``, checking keys, types and ranges."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.')}' must be a table (a [section]), got {raw!r}.")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{origin(prefix + key, where, set_keys)}: unknown key '{prefix}{key}'"
                              f"{_suggest(key, list(known), prefix)}; "
                              f"valid keys here: {', '.join(known)}.")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in raw:
            continue
        value, key = raw[name], f"{prefix}{name}"
        tp = hints[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if is_dataclass(default):
            sub = section_class(name, value if isinstance(value, dict) else {}, type(default), where, set_keys)
            values[name] = build(sub, value, key + ".", where, set_keys)
            continue
        values[name] = check_value(key, value, tp, f.metadata, origin(key, where, set_keys))
    return cls(**values)


def check_value(key: str, value: Any, tp: Any, meta: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, types.GenericAlias) or tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}.")
        (item_tp,) = typing.get_args(tp) or (object,)
        bad = [v for v in value if item_tp is not object and type(v) is not item_tp]
        if bad:
            raise ConfigError(f"{where}: '{key}' must be a list of {_type_name(item_tp)}s, got {bad[0]!r} in it.")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a table of key = value pairs (e.g. {{eta = 0.01}}), "
                              f"got {value!r}.")
    elif tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{where}: '{key}' must be {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__}).")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' = {value!r} is not a finite number; give a number "
                          f"(TOML reads nan, inf and 1e400 as non-finite).")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: '{key}' = {value!r} is not allowed{_suggest(str(value), choices)}; "
                          f"choose one of: {', '.join(map(str, choices))}.")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: '{key}' = {value!r} is too small; it must be at least {lo}.")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: '{key}' = {value!r} is too large; it must be at most {hi}.")
    return value


# --------------------------------------------------------------------------- output


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    import tomli_w

    return tomli_w.dumps(to_dict(cfg))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def non_trajectory_keys(cfg: Config) -> frozenset[str]:
    """Flat keys that do not change what is trained: the NON_TRAJECTORY sections and every field
    declared with ``opt(..., trajectory=False)``."""
    out = {k for k, _, meta in _walk(cfg) if not meta.get("trajectory", True)}
    out |= {k for k in flatten(to_dict(cfg))
            if any(k == p or (p.endswith(".") and k.startswith(p)) for p in NON_TRAJECTORY)}
    return frozenset(out)


def _walk(obj: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(flat key, value, field metadata) of every leaf of a config instance."""
    return [(k, v, f.metadata) for k, v, f in _fields(obj, prefix)]


def default_items(cfg: Config) -> dict[str, Any]:
    """Each flat key's default in its section's schema (for the section variants ``cfg`` holds)."""
    out: dict[str, Any] = {}
    for key, _, f in _fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[key] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[key] = f.default_factory()
    return out


def _fields(obj: Any, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field]]:
    rows: list[tuple[str, Any, dataclasses.Field]] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            rows.extend(_fields(value, f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", value, f))
    return rows


def trajectory_items(cfg: Config) -> dict[str, Any]:
    """The flat config keys that decide what is trained (what a resume must not change)."""
    free = non_trajectory_keys(cfg)
    return {k: v for k, v in flatten(to_dict(cfg)).items() if k not in free}


def config_hash(cfg: Config) -> str:
    blob = json.dumps(trajectory_items(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
