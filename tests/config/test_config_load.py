import pytest

from trainwell.config import config_hash, load_config, recipe_names, to_toml
from trainwell.config.load import parse_value
from trainwell.errors import ConfigError


def test_every_shipped_recipe_validates():
    names = recipe_names()
    assert "default" in names
    for name in names:
        cfg = load_config(name)
        assert cfg.description, f"recipe {name} needs a description"


def test_overrides_are_typed():
    cfg = load_config("default", ["optim.lr=3e-4", "train.steps=7", "model.tie_embeddings=false",
                                  "run.name=abc", "eval.prompt='class '"])
    assert cfg.optim.lr == 3e-4 and cfg.train.steps == 7 and cfg.model.tie_embeddings is False
    assert cfg.run.name == "abc" and cfg.eval.prompt == "class "


def test_int_is_accepted_for_float():
    assert load_config("default", ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize("override, words", [
    (["optim.lrr=1"], ["unknown key 'optim.lrr'", "did you mean 'optim.lr'"]),
    (["train.steps=abc"], ["train.steps", "must be an integer"]),
    (["train.steps=1.5"], ["train.steps", "must be an integer"]),
    (["train.compile=1"], ["train.compile", "true or false"]),
    (["train.precision=bf61"], ["train.precision", "did you mean 'bf16'"]),
    (["train.steps=0"], ["train.steps", "at least 1"]),
    (["model.dropout=1.5"], ["model.dropout", "at most 1.0"]),
    (["model.name=gtp"], ["model.name", "did you mean 'gpt'"]),
    (["traine.steps=3"], ["unknown key 'traine'", "did you mean 'train'"]),
    (["trainsteps"], ["section.key=value"]),
    (["train.steps.x=1"], ["'steps' is a value"]),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config("default", override)
    for w in words:
        assert w in str(e.value)
    assert "--set" in str(e.value) or "section.key" in str(e.value)


def test_malformed_toml_names_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = = 3\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(str(bad))


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        load_config("defualt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("missing/recipe.toml")


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config("default", ["optim.lr=5e-4"])
    path = tmp_path / "config.toml"
    path.write_text(to_toml(cfg))
    again = load_config(str(path))
    assert again == cfg and config_hash(again) == config_hash(cfg)


def test_hash_ignores_logging_but_not_training():
    base = config_hash(load_config("default"))
    assert config_hash(load_config("default", ["log.every=3", "run.name=z", "checkpoint.every=7"])) == base
    assert config_hash(load_config("default", ["optim.lr=1e-4"])) != base


def test_parse_value():
    assert parse_value("3e-4") == 3e-4 and parse_value("true") is True
    assert parse_value("hello") == "hello" and parse_value("[1, 2]") == [1, 2]


def test_evaluation_only_keys_are_not_in_the_hash_and_may_change_on_resume(tmp_path):
    from trainwell.config import config_hash, trajectory_items
    from trainwell.engine.restore import check_same_config
    from trainwell.errors import CheckpointError

    a = load_config("cartpole_ppo")
    b = load_config("cartpole_ppo", ["data.eval_episodes=3", "data.eval_seed=7", "data.video=false", "eval.every=9"])
    assert "data.eval_episodes" not in trajectory_items(a) and config_hash(a) == config_hash(b)
    # a checkpoint written before these keys left the hash still resumes with other values
    old = {"meta": {"config": {**trajectory_items(a), "data.eval_episodes": 10}}}
    check_same_config(tmp_path, old, b)
    with pytest.raises(CheckpointError, match="data.gamma"):
        check_same_config(tmp_path, old, load_config("cartpole_ppo", ["data.gamma=0.9"]))


def test_a_key_added_after_the_checkpoint_resumes_at_its_default(tmp_path):
    """A checkpoint of an older trainwell lacks the keys added since: at their defaults they match."""
    from trainwell.config import trajectory_items
    from trainwell.engine.restore import check_same_config
    from trainwell.errors import CheckpointError

    sets = ["model.name=hf_causal", "model.path=/models/gpt2"]
    cfg = load_config("code_sft", sets)
    older = {k: v for k, v in trajectory_items(cfg).items() if k != "model.keep_dropout"}
    check_same_config(tmp_path, {"meta": {"config": older}}, cfg)
    with pytest.raises(CheckpointError, match=r"model.keep_dropout \(None -> True\)"):
        check_same_config(tmp_path, {"meta": {"config": older}}, load_config("code_sft", [*sets, "model.keep_dropout=true"]))
    with pytest.raises(CheckpointError, match="optim.lr"):  # a key the checkpoint has is still compared
        check_same_config(tmp_path, {"meta": {"config": {**older, "optim.lr": 1.0}}}, cfg)


def test_import_path_sections_keep_their_keys_and_round_trip():
    from trainwell.config import to_toml

    text = ("[model]\nname = 'my_pkg.nets:build'\nwidth = 64\nacts = ['relu', 'tanh']\n"
            "[objective]\nname = 'my_pkg.losses:mse'\nscale = 0.5\n")
    cfg = load_config(text=text, overrides=["model.width=128"])
    assert (cfg.model.name, cfg.model.width, cfg.model.acts, cfg.objective.scale) == (
        "my_pkg.nets:build", 128, ["relu", "tanh"], 0.5)
    assert load_config(text=to_toml(cfg)) == cfg  # config.toml of a run reads back the same
    assert load_config(text=text) != cfg


def test_switching_a_variant_with_set_drops_the_recipes_keys_of_the_old_one():
    cfg = load_config("code_sft", ["model.name=hf_causal", "model.path=/models/gpt2"])
    assert cfg.model.name == "hf_causal" and cfg.model.path == "/models/gpt2" and not hasattr(cfg.model, "n_layer")
    with pytest.raises(ConfigError, match="unknown key 'model.n_layer'"):  # a key the user sets is still checked
        load_config("code_sft", ["model.name=hf_causal", "model.n_layer=2"])
