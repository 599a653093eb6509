"""Learning from preferences: the five shipped recipes (SFT, reward model, DPO, PPO, GRPO) run tiny and
learn; references agree; bad rows are one clear error; stages train their starting point first; a
Hugging Face causal LM with LoRA works with the adapters-off reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import trainwell
from trainwell.errors import ConfigError, DataError

STAGE_METRICS = {  # TRL's names, under train/ and val/
    "sft": ["train/mean_token_accuracy", "val/loss"],
    "reward": ["train/accuracy", "train/margin", "val/accuracy", "val/margin", "val/rewards/chosen"],
    "dpo": ["train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins", "train/rewards/accuracies",
            "train/logps/chosen", "train/logps/rejected", "val/rewards/accuracies"],
    "ppo": ["train/kl", "train/reward", "train/reward_std", "train/entropy", "train/value_loss",
            "train/clip_ratio/region_mean", "train/completions/mean_length", "val/reward", "val/kl"],
    "grpo": ["train/kl", "train/reward", "train/reward_std", "train/rewards/spaces", "train/entropy",
             "train/clip_ratio/low_mean", "train/clip_ratio/high_mean", "train/clip_ratio/region_mean",
             "train/completions/mean_length", "train/frac_reward_zero_std", "val/reward", "val/kl"],
    "online_dpo": ["train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
                   "train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected", "train/kl",
                   "train/reward", "train/rewards/spaces", "train/pairs/untied", "val/reward", "val/kl"],
}
RECIPES = {"sft": "code_sft", "reward": "code_reward", "dpo": "code_dpo", "ppo": "code_ppo", "grpo": "code_grpo",
           "online_dpo": "code_online_dpo"}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def evals(run: Path, key: str) -> list[float]:
    return [r[key] for r in records(run) if key in r]


@pytest.mark.parametrize("stage", list(RECIPES))
def test_each_recipe_runs_tiny_and_logs_trl_metric_names(stage, tmp_path, pref, reward_model):
    """In process (tests/engine/test_exact_resume.py runs each of them from the CLI, killed and resumed)."""
    extra = {"ppo": {"objective__reward_model": str(reward_model)},
             "grpo": {"objective__reward_funcs": ["pref_rewards:spaces"], "objective__beta": 0.04},
             "online_dpo": {"objective__reward_funcs": ["pref_rewards:spaces"]}}.get(stage, {})
    res = trainwell.train(RECIPES[stage], pref(stage, **extra), run_dir=tmp_path / stage)
    logged = set().union(*map(set, records(res.run_dir)))
    assert set(STAGE_METRICS[stage]) <= logged, set(STAGE_METRICS[stage]) - logged
    assert (res.run_dir / "checkpoints" / "step-20").is_dir() and res.summary["steps"] == 20
    samples = (res.run_dir / "samples" / "step-20.txt").read_text()  # completions at every evaluation
    assert samples.count("--- sample") == 2 and (res.run_dir / "samples" / "step-10.txt").is_file()


def test_sft_reward_model_and_dpo_learn(tmp_path, pref):
    sft = trainwell.train("code_sft", pref("sft", train__steps=40, optim__lr=3e-3), run_dir=tmp_path / "sft")
    losses = evals(sft.run_dir, "val/loss")
    assert losses[-1] < losses[0]
    rm = trainwell.train("code_reward", pref("reward", train__steps=30, optim__lr=3e-3), run_dir=tmp_path / "rm")
    assert rm.summary["val_accuracy"] >= 0.8 and rm.summary["val_margin"] > 0
    dpo = trainwell.train("code_dpo", pref("dpo", train__steps=30, optim__lr=3e-3), run_dir=tmp_path / "dpo")
    assert dpo.summary["val_rewards_accuracies"] >= 0.8 and dpo.summary["val_rewards_margins"] > 0


def test_dpo_precomputed_reference_equals_a_frozen_copy(tmp_path, pref):
    a = trainwell.train("code_dpo", pref("dpo", objective__reference="precompute"), run_dir=tmp_path / "pre")
    b = trainwell.train("code_dpo", pref("dpo", objective__reference="model"), run_dir=tmp_path / "copy")
    keys = [k for k in a.summary if k.startswith("val_")]
    assert keys and all(a.summary[k] == pytest.approx(b.summary[k], rel=1e-5, abs=1e-6) for k in keys)
    first = next(r for r in records(a.run_dir) if "train/rewards/margins" in r)
    assert abs(first["train/rewards/margins"]) < 0.5  # the policy starts as the reference: margins near 0


def test_grpo_raises_a_python_reward_function(tmp_path, pref):
    res = trainwell.train("code_grpo", pref("grpo", objective__reward_funcs=["pref_rewards:spaces"], optim__lr=1e-2,
                                            train__steps=30, eval__every=15, objective__beta=0.0),
                          run_dir=tmp_path / "grpo")
    rewards = evals(res.run_dir, "val/reward")
    assert rewards[-1] > 0.6 and rewards[-1] > rewards[0] - 0.05
    assert res.summary["reference"] == "none"  # beta 0: no reference model at all


def test_grpo_with_the_kl_in_the_reward_logs_the_sequence_kl(tmp_path, pref):
    res = trainwell.train("code_grpo", pref("grpo", objective__reward_funcs=["pref_rewards:spaces"],
                                            objective__beta=0.1, objective__kl_in_reward=True, train__steps=6,
                                            eval__every=6), run_dir=tmp_path / "grpo")
    rows = [r for r in records(res.run_dir) if "train/non_score_reward" in r]
    assert rows and all(r["train/non_score_reward"] == pytest.approx(-0.1 * r["train/kl"]) for r in rows)
    assert res.summary["reference"] == "model" and evals(res.run_dir, "val/kl")


def test_online_dpo_raises_a_python_reward_function(tmp_path, pref):
    """Pairs of the policy's own samples, ordered by the reward: the reward it ranks by goes up."""
    res = trainwell.train("code_online_dpo", pref("online_dpo", objective__reward_funcs=["pref_rewards:spaces"],
                                                  optim__lr=1e-2, train__steps=30, eval__every=15),
                          run_dir=tmp_path / "odpo")
    rewards = evals(res.run_dir, "val/reward")
    assert rewards[-1] > 0.6 and rewards[-1] > rewards[0] - 0.05
    assert res.summary["reference"] == "model" and evals(res.run_dir, "val/kl")


@pytest.mark.parametrize("values,match", [
    ({"data__group_size": 1}, "data.group_size must be at least 2"),
    ({"data__minibatch_size": 2}, "set data.minibatch_size = 0"),
    ({"data__group_size": 3, "objective__label_temperature": 0.5}, "needs data.group_size = 2"),
    ({"objective__reference": "none"}, "DPO's implicit reward is measured against the reference"),
])
def test_online_dpo_settings_that_cannot_work_are_one_clear_error(tmp_path, pref, values, match):
    with pytest.raises(ConfigError, match=match):
        trainwell.train("code_online_dpo", pref("online_dpo", objective__reward_funcs=["pref_rewards:spaces"],
                                                **values), run_dir=tmp_path / "run")


@pytest.mark.parametrize("stage,rows,match", [
    ("sft", '{"prompt": "def f", "text": "x"}', "has no 'completion' column"),
    ("dpo", '{"prompt": "def f", "chosen": "x = 1", "rejected": ""}', "'rejected' is empty"),
    ("sft", '{"prompt": "' + "x" * 40 + '", "completion": "y"}', "the prompt is 40 tokens, longer than the 31"),
    ("grpo", '{"prompt": "' + "x" * 30 + '"}', "shorten it, lower data.max_new_tokens"),
])
def test_bad_rows_are_one_clear_error(tmp_path, pref, stage, rows, match):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([rows] * 10) + "\n")
    with pytest.raises(DataError, match=match):
        trainwell.train(RECIPES[stage], pref(stage, data__path=str(path), data__eval_path=str(path)),
                        run_dir=tmp_path / "run")


def test_bad_rows_from_the_cli_exit_2_with_one_line(tmp_path, pref, cli):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "def f", "answer": "x"}\n')
    sets = [a for s in pref("sft", data__path=str(path)) for a in ("--set", s)]
    done = cli("train", "code_sft", "--run-dir", str(tmp_path / "run"), *sets)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "row 1 of" in done.stderr and "has no 'completion' column" in done.stderr


def test_a_reward_function_must_return_one_value_per_completion(tmp_path, pref):
    with pytest.raises(ConfigError, match="one float"):
        trainwell.train("code_grpo", pref("grpo", objective__reward_funcs=["pref_rewards:too_few"]),
                        run_dir=tmp_path / "run")


def test_recipe_stage_is_trained_first_and_recorded_as_its_checkpoint(tmp_path, tiny, pref, monkeypatch):
    """train.init_from = "recipe:FILE": the starting run is trained in <run.dir>/<name> first, then reused."""
    stage = tmp_path / "tiny_pre.toml"
    values = dict(s.split("=", 1) for s in tiny(eval__samples=0, log__plots=False, log__tensorboard=False))
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"{name} = {value}")
    stage.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()))
    runs = tmp_path / "runs"
    sets = pref("sft", train__init_from=f"recipe:{stage}", run__dir=str(runs))
    first = trainwell.train("code_sft", sets, run_dir=tmp_path / "sft")
    pre = runs / "tiny_pre"
    assert (pre / "summary.json").is_file()
    recorded = (first.run_dir / "config.toml").read_text()
    assert str((pre / "checkpoints" / "step-20").resolve()) in recorded
    mtime = (pre / "summary.json").stat().st_mtime
    trainwell.train("code_sft", sets, run_dir=tmp_path / "sft2")  # the finished stage is reused, not retrained
    assert (pre / "summary.json").stat().st_mtime == mtime


# ---------------------------------------------------------------------------- Hugging Face causal LM, LoRA


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory) -> Path:
    """A tiny GPT-2 with a byte-level tokenizer (every byte one token, no merges), built locally."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    tokenizers = pytest.importorskip("tokenizers")

    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    chars = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols
    vocab = {c: i for i, c in enumerate(chars)} | {"<|endoftext|>": 256}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")
    fast.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=256, eos_token_id=256)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def test_hugging_face_causal_lm_samples_in_batches_with_its_own_cache(hf_gpt2):
    """Left-padded rows of mixed lengths, a stop token, windows cut at the context: the cached batch
    gives what one full forward per token gives."""
    from trainwell.engine.generate import generate
    from trainwell.models.hf import build_hf_causal
    from trainwell.config import load_config

    model = build_hf_causal(load_config("code_sft", ["model.name=hf_causal", f"model.path={json.dumps(str(hf_gpt2))}"])
                            .model).eval()
    prompts = [[5, 6, 7], list(range(20, 41)), [9]]
    cached = generate(model, prompts, max_new_tokens=70, temperature=0)  # 21 + 70 > 64: cut and rebuilt
    plain = generate(model, prompts, max_new_tokens=70, temperature=0, use_cache=False)
    assert cached.ids == plain.ids and cached.rebuilds >= 1
    stop = cached.ids[1][5]
    assert generate(model, prompts, max_new_tokens=20, temperature=0, stop_ids=[stop]).ids == \
        generate(model, prompts, max_new_tokens=20, temperature=0, stop_ids=[stop], use_cache=False).ids


@pytest.mark.parametrize("keep", [False, True])
def test_hugging_face_causal_lm_dropout_is_off_unless_asked_for(hf_gpt2, keep):
    from trainwell.config import load_config
    from trainwell.models.hf import build_hf_causal

    model = build_hf_causal(load_config("code_sft", ["model.name=hf_causal", f"model.path={json.dumps(str(hf_gpt2))}",
                                                     f"model.keep_dropout={str(keep).lower()}"]).model)
    rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates and (max(rates) > 0) == keep
    model.train()
    ids = torch.randint(0, 20, (2, 8))
    assert torch.equal(model(ids), model(ids)) != keep  # without dropout, training forwards are deterministic


def test_hugging_face_causal_lm_sft_then_dpo_with_lora_adapters_as_the_reference(tmp_path, pref, hf_gpt2):
    hf = dict(model__name="hf_causal", model__path=str(hf_gpt2), train__init_from="")
    sft = trainwell.train("code_sft", pref("sft", **hf), run_dir=tmp_path / "sft")
    assert sft.summary["vocab_size"] == 257 and sft.summary["val_loss"] < 6.0
    lora = dict(adapter__method="lora", adapter__targets=["c_attn"], objective__reference="adapters")
    dpo = trainwell.train("code_dpo", pref("dpo", **hf, **lora, optim__lr=1e-2), run_dir=tmp_path / "dpo")
    first = next(r for r in records(dpo.run_dir) if "train/rewards/margins" in r)
    assert dpo.summary["trainable_parameters"] < dpo.summary["total_parameters"] / 4
    assert dpo.summary["val_rewards_margins"] > first["train/rewards/margins"]
    assert (dpo.run_dir / "adapter" / "adapter_config.json").is_file()

    # the adapters-off model is exactly the pretrained GPT-2 (the reference needs no second copy)
    from trainwell.adapters.lora import adapters_off
    from trainwell.inference import load_for_inference

    _, job, _, _ = load_for_inference(dpo.run_dir)
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(str(hf_gpt2)).eval()
    ids = torch.randint(0, 256, (2, 12))
    with adapters_off(job.model):
        off = job.model(ids)
    assert torch.allclose(off, base(input_ids=ids).logits, atol=1e-5)
    assert not torch.allclose(job.model(ids), off, atol=1e-3)  # with the adapters on it has learned


@pytest.mark.parametrize("stage", ["grpo", "ppo", "online_dpo"])
def test_rollout_source_resumes_exactly_mid_epoch(stage, pref):
    """Prompt position, the sampling generator, the rollout and the minibatch order are all in its state."""
    from sources import assert_source_resumes_exactly

    from trainwell.config import load_config

    # online DPO: whole rollouts, labelled by a noisy judge (its draws come from the sampling generator)
    extra = {"objective__label_temperature": 0.5} if stage == "online_dpo" else {"data__minibatch_size": 2}
    cfg = load_config(RECIPES[stage], pref(stage, objective__reward_model="", objective__reward_funcs=[
        "pref_rewards:spaces"], data__update_epochs=2, **extra))
    last = assert_source_resumes_exactly(cfg, before=5, after=6)  # 5 = inside the 2nd (3rd) rollout's epochs
    keys = {"ref_logp", "pair_weight"} if stage == "online_dpo" else {"adv", "old_logp"}
    assert {"ids", "mask"} | keys <= set(last)


def test_checkpoint_names_match_across_the_heads_body_prefix():
    """A plain LM's weights load into a reward model / policy-with-value-head (under `body.`) and back."""
    from trainwell.config.schema import GPTConfig
    from trainwell.engine.prepare import match_weights
    from trainwell.models.gpt import GPT
    from trainwell.models.heads import PolicyValue, ScalarHead

    torch.manual_seed(0)
    lm = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, context=8), vocab_size=11)
    rm = ScalarHead(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, context=8), vocab_size=11))
    into = match_weights(lm.state_dict(), rm.state_dict())
    assert set(into) == {k for k in rm.state_dict() if k.startswith("body.")}  # the head starts fresh
    assert torch.equal(into["body.blocks.0.attn.qkv.weight"], lm.blocks[0].attn.qkv.weight)
    policy = PolicyValue(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, context=8), vocab_size=11))
    back = match_weights(policy.state_dict(), lm.state_dict())
    assert set(back) == set(lm.state_dict())
    ids = torch.randint(0, 11, (2, 5))
    lm.load_state_dict(back)
    assert torch.equal(lm(ids), policy(ids)[0])
