"""Import paths in a recipe: ``model.name = "my_pkg.nets:build"`` names the user's own callable.

A name with a colon is ``module:attribute`` (the attribute may be dotted, ``mod:Class.method``).
The module is imported when the run is built, from the Python path (an installed package, the
current folder, or PYTHONPATH); a missing module or name is one clear error naming the key.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Callable

from trainwell.errors import ConfigError


def is_import_path(name: str) -> bool:
    return ":" in name


def load_callable(spec: str, key: str) -> Callable[..., Any]:
    """The callable ``spec`` = "module:attribute" names; ``key`` (e.g. "model.name") for messages."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key} = {spec!r} is not an import path; write it as 'module:function', e.g. "
                          f"'my_pkg.nets:build'.")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:  # the `trainwell` script does not see the cwd by itself
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        raise ConfigError(f"{key} = {spec!r}: no module named '{missing}'; install it or run from the folder "
                          f"that holds it (or add that folder to PYTHONPATH).") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise ConfigError(f"{key} = {spec!r}: module '{module_name}' has no '{attr}' (it defines "
                              f"{', '.join(public) or 'nothing public'}); check the name after the colon.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{key} = {spec!r} names a {type(obj).__name__}, not a function or class; point it at "
                          f"the callable that builds the {key.split('.')[0]}.")
    return obj


def options(section: Any) -> dict[str, Any]:
    """The extra keys of a section that names an import path (everything but ``name``)."""
    return {k: v for k, v in vars(section).items() if k != "name"}
