"""Transfer learning from a pretrained checkpoint: freezing, LoRA (PEFT layout, merge, swap),
forgetting measurement and replay, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainwell
from tinyrun import needs
from trainwell.errors import ConfigError

# LoRA/QLoRA need the optional peft package (trainwell[adapters]); full fine-tuning, freezing,
# retain evaluation and replay do not, so only the adapter tests skip without it.
needs_peft = needs("peft")  # trainwell[adapters]


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_full_finetune_keeps_pretrained_vocabulary_and_logs_retain_loss(tmp_path, finetune, pretrained):
    res = trainwell.train("default", finetune(eval__retain=True), run_dir=tmp_path / "ft")
    s = res.summary
    pre_summary = json.loads((pretrained.parents[1] / "summary.json").read_text())
    assert s["vocab_size"] == pre_summary["vocab_size"]  # the target text is encoded with the old ids
    assert s["trainable_parameters"] == s["total_parameters"] == s["parameters"]
    assert s["peak_rss_mb"] > 0
    evals = [r for r in metrics(res.run_dir) if "retain/loss" in r]
    assert evals and all("val/loss" in r for r in evals)
    # the start is the pretrained model: its retain loss is far below a fresh model's log(vocab)
    assert evals[0]["retain/loss"] < 0.9 * torch.log(torch.tensor(float(s["vocab_size"]))).item()


def test_train_only_freezes_everything_else(tmp_path, finetune, pretrained):
    res = trainwell.train("default", finetune(adapter__train_only=["blocks.1.*", "ln_f.*"]),
                          run_dir=tmp_path / "frozen")
    before = load_file(pretrained / "model.safetensors")
    after = load_file(res.run_dir / "checkpoints" / "step-20" / "model.safetensors")
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(("blocks.1.", "ln_f.")) for k in changed)
    assert res.summary["trainable_parameters"] < res.summary["total_parameters"]


@needs_peft
def test_bad_freeze_pattern_is_one_clear_error(finetune, tmp_path):
    with pytest.raises(ConfigError, match="matches no parameter"):
        trainwell.train("default", finetune(adapter__freeze=["block.*"]), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="names no layer"):
        trainwell.train("default", finetune(adapter__method="lora", adapter__targets=["q_proj"]),
                        run_dir=tmp_path / "y")


@needs_peft
def test_from_a_whole_model_into_lora_points_to_init_from(tmp_path, finetune, pretrained):
    from trainwell.errors import CheckpointError

    with pytest.raises(CheckpointError, match="train.init_from"):
        trainwell.train("default", finetune(adapter__method="lora"), run_dir=tmp_path / "x", branch_from=pretrained)


def test_a_checkpoint_of_another_gpt_function_is_refused_with_the_fix(tmp_path, finetune, pretrained):
    """Same names and shapes, another function (QK-norm on or off): init_weights alone would load it."""
    from trainwell.config import load_config

    trained_with = load_config(str(pretrained.parents[1] / "config.toml")).model.qk_norm
    fix = f"--set model.qk_norm={str(trained_with).lower()}"
    with pytest.raises(ConfigError, match=f"model.qk_norm = {trained_with}.*{fix}"):
        trainwell.train("default", finetune(model__qk_norm=not trained_with), run_dir=tmp_path / "x")


def build_trained(run: Path, *, merge: bool = False) -> torch.nn.Module:
    from trainwell.inference import load_for_inference

    _, job, _, _ = load_for_inference(run, merge=merge)
    return job.model


def fresh_base(run: Path) -> torch.nn.Module:
    """The pretrained model of a run, without adapters."""
    from trainwell.config import load_config
    from trainwell.paradigms import build_job
    from trainwell.engine.prepare import init_weights

    cfg = load_config(str(run / "config.toml"))
    job = build_job(cfg, torch.device("cpu"))
    init_weights(job.model, Path(cfg.train.init_from))
    return job.model.eval()


@needs_peft
def test_lora_saves_only_adapters_round_trips_through_peft_and_merges(tmp_path, finetune):
    # B starts at zero; init_lora_weights is peft's default, so after 20 steps B != 0 and outputs differ
    res = trainwell.train("default", finetune(adapter__method="lora", adapter__rank=4, optim__lr=1e-2),
                          run_dir=tmp_path / "lora")
    s = res.summary
    assert s["trainable_parameters"] < 0.5 * s["total_parameters"]
    saved = load_file(res.run_dir / "checkpoints" / "step-20" / "model.safetensors")
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)  # only the adapters
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)

    x = torch.randint(0, s["vocab_size"], (2, 16))
    trained = build_trained(res.run_dir)
    base = fresh_base(res.run_dir)
    with torch.no_grad():
        y = trained(x)
        assert not torch.allclose(y, base(x), atol=1e-4)  # the adapter changed the function

    # PEFT layout: peft's own loader on a fresh base gives the same outputs
    adapter_dir = res.run_dir / "adapter"
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4
    import peft

    peft_model = peft.PeftModel.from_pretrained(fresh_base(res.run_dir), str(adapter_dir)).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x), y, rtol=0, atol=1e-6)

    # ... and so does ours; merged into the base, within float tolerance
    from trainwell.adapters.lora import load_peft, merge

    ours = fresh_base(res.run_dir)
    handle = load_peft(ours, adapter_dir)
    merged = build_trained(res.run_dir, merge=True)
    assert not any("lora_" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), y, rtol=0, atol=1e-6)
        torch.testing.assert_close(merged(x), y, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(merge(handle)(x), y, rtol=1e-4, atol=1e-4)


@needs_peft
def test_adapters_kept_apart_and_swapped(tmp_path, finetune):
    from trainwell.adapters.lora import load_peft, use_adapter

    runs = [trainwell.train("default", finetune(adapter__method="lora", optim__lr=1e-2, train__seed=seed),
                            run_dir=tmp_path / f"lora{seed}").run_dir for seed in (1, 2)]
    x = torch.randint(0, 30, (2, 16))
    expected = []
    with torch.no_grad():
        for run in runs:
            expected.append(build_trained(run)(x))
        model = fresh_base(runs[0])
        handle = load_peft(model, runs[0] / "adapter", "first")
        load_peft(model, runs[1] / "adapter", "second", handle)
        model.eval()
        for name, want in (("second", expected[1]), ("first", expected[0]), ("second", expected[1])):
            use_adapter(handle, name)
            torch.testing.assert_close(model(x), want, rtol=0, atol=1e-6)
        with pytest.raises(ConfigError, match="no adapter named"):
            use_adapter(handle, "third")


@pytest.mark.parametrize("method", ["lora", "qlora", "replay"])
def test_resume_is_bit_identical(tmp_path, finetune, cli, cli_here, method):
    """Run 20 steps (in this process); copy the run as it stood at step 10 (the later checkpoints
    dropped: a run stopped there wrote the same ones) and --resume it in a new process: the final
    adapter/model weights and optimizer state must match bit for bit."""
    if method in ("lora", "qlora"):
        pytest.importorskip("peft")
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    extra = dict(adapter__method=method, model__dropout=0.1, adapter__dropout=0.1) if method != "replay" else \
        dict(data__replay_fraction=0.25, model__dropout=0.1)
    args = [a for s in finetune(checkpoint__keep=10, **extra) for a in ("--set", s)]
    full, part = tmp_path / "full", tmp_path / "part"
    out = cli_here("train", "default", *args, "--run-dir", str(full))
    assert out.returncode == 0, out.stderr[-2000:]
    shutil.copytree(full, part)
    for late in ("step-15", "step-20"):
        shutil.rmtree(part / "checkpoints" / late)
    out = cli("train", "--resume", str(part))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resumed from" in out.stdout + out.stderr
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(full / "checkpoints" / "step-20" / name)
        b = load_file(part / "checkpoints" / "step-20" / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"


def test_replay_mixes_pretraining_windows(finetune, pretrained):
    from trainwell.config import load_config
    from trainwell.paradigms import build_job

    cfg = load_config("default", finetune(data__replay_fraction=0.25))
    job = build_job(cfg, torch.device("cpu"))
    batch = next(job.source)
    assert batch["input"].shape[0] == cfg.train.batch_size  # 6 target + 2 replayed sequences
    assert job.source.state_dict()["replay"]["index"] == 1
    with pytest.raises(ConfigError, match="replayed sequences per batch"):
        build_job(load_config("default", finetune(data__replay_fraction=0.01)), torch.device("cpu"))
    with pytest.raises(ConfigError, match="pretraining text of train.init_from"):
        no_init = [a for a in finetune(data__replay_fraction=0.25) if not a.startswith("train.init_from")]
        build_job(load_config("default", no_init), torch.device("cpu"))


@pytest.mark.parametrize("recipe", ["finetune_full", "finetune_lora", "finetune_qlora", "finetune_replay"])
def test_shipped_transfer_recipes_run_from_the_cli(tmp_path, finetune, cli, cli_here, recipe):
    if recipe in ("finetune_lora", "finetune_qlora"):
        pytest.importorskip("peft")
    if recipe == "finetune_qlora":
        pytest.importorskip("bitsandbytes")
    sets = finetune(train__steps=6, checkpoint__every=6, eval__every=3, train__precision="bf16")
    # the full fine-tune as a real process; the adapter recipes through the same CLI in this process
    # (a new process imports peft each time: ~5 s)
    out = (cli if recipe == "finetune_full" else cli_here)("train", recipe, *[a for s in sets for a in ("--set", s)], "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["steps"] == 6 and "retain_loss" in s and s["peak_rss_mb"] > 0
    assert ("adapter_dir" in s) == (recipe in ("finetune_lora", "finetune_qlora"))
    assert "trainable" in out.stdout  # the run reports trainable vs total parameters
