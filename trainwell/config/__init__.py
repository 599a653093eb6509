"""Typed config tree, TOML recipes, --set overrides. Light: no torch import."""

from trainwell.config.load import (
    config_hash,
    flatten,
    load_config,
    recipe_names,
    recipe_text,
    to_dict,
    to_toml,
    trajectory_items,
)
from trainwell.config.schema import Config

__all__ = ["Config", "config_hash", "flatten", "load_config", "recipe_names", "recipe_text",
           "to_dict", "to_toml", "trajectory_items"]
