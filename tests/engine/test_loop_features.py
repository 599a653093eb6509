"""The loop's options, each run tiny on CPU through the public Python API."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import trainwell
from trainwell.config import load_config


def run(tmp_path, tiny, name="run", **extra):
    return trainwell.train("default", tiny(**extra), run_dir=tmp_path / name)


def weights(result, step):
    return load_file(result.run_dir / "checkpoints" / f"step-{step}" / "model.safetensors")


def test_run_directory_contract(tmp_path, tiny):
    res = run(tmp_path, tiny)
    d = res.run_dir
    for name in ("config.toml", "meta.json", "metrics.jsonl", "summary.json", "samples.txt"):
        assert (d / name).is_file(), name
    assert list(d.glob("events.*")), "TensorBoard event file missing"
    assert {p.name for p in (d / "plots").glob("*.png")} >= {"loss.png", "lr.png", "throughput.png"}
    assert (d / "checkpoints" / "step-20" / "model.safetensors").is_file()
    lines = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r and r["step"] == 20 for r in lines)
    mfu = [r["train/mfu"] for r in lines if "train/mfu" in r]
    assert mfu and all(0 < m < 1 for m in mfu)  # measured against this machine's probed peak
    assert all(isinstance(r["time"], float) for r in lines)
    assert any("val/loss" in r for r in lines)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["seed"] == 1337 and meta["torch"] == torch.__version__
    assert load_config(str(d / "config.toml")) == load_config("default", tiny())
    # keep = 3 newest (+ best, which is the newest here)
    assert len(list((d / "checkpoints").iterdir())) <= 4
    assert res.summary["val_loss"] < res.summary["unigram_val_loss"] + 1.0
    assert res.samples and res.samples[0].startswith("def ")


def test_learning_happens(tmp_path, tiny):
    res = run(tmp_path, tiny, train__steps=120, checkpoint__every=60, eval__every=60)
    assert res.summary["val_loss"] < res.summary["unigram_val_loss"], res.summary


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny):
    a, b = run(tmp_path, tiny, "a"), run(tmp_path, tiny, "b")
    c = run(tmp_path, tiny, "c", train__seed=7)
    wa, wb, wc = weights(a, 20), weights(b, 20), weights(c, 20)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_grad_accum_matches_bigger_batch(tmp_path, tiny):
    # two micro-batches of 8 are exactly the first 16 windows of the epoch's order. AdamW: Muon's
    # Newton-Schulz step multiplies a gradient's weakest directions by up to 3.4^5, so the two
    # summation orders' rounding (1e-7) would show at 1e-5 after a few steps
    a = run(tmp_path, tiny, "a", train__steps=3, train__batch_size=8, train__grad_accum=2,
            checkpoint__every=3, optim__grad_clip=0.0, optim__name="adamw")
    b = run(tmp_path, tiny, "b", train__steps=3, train__batch_size=16, train__grad_accum=1,
            checkpoint__every=3, optim__grad_clip=0.0, optim__name="adamw")
    wa, wb = weights(a, 3), weights(b, 3)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


@pytest.mark.parametrize("extra", [
    {"optim__name": "sgd", "optim__lr": 0.05},
    {"schedule__name": "linear"},
    {"schedule__name": "constant"},
    {"train__precision": "bf16"},
    {"train__activation_checkpointing": 2, "model__dropout": 0.1},
])
def test_options_train(tmp_path, tiny, extra):
    res = run(tmp_path, tiny, **extra)
    assert res.summary["steps"] == 20 and res.summary["val_loss"] == res.summary["val_loss"]  # finite


def test_epochs_set_the_length(tmp_path, tiny):
    res = run(tmp_path, tiny, train__epochs=1, train__batch_size=16)
    from trainwell.data.text import load_text

    corpus = load_text(load_config("default", tiny()).data)
    per_epoch = ((len(corpus.train) - 32) // 32) // 16
    assert res.summary["steps"] == per_epoch


def test_fp16_needs_cuda(tmp_path, tiny):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from trainwell.errors import ConfigError

    with pytest.raises(ConfigError, match="fp16.*CUDA"):
        run(tmp_path, tiny, train__precision="fp16")


@pytest.mark.slow
def test_torch_compile(tmp_path, tiny):
    res = run(tmp_path, tiny, train__compile=True, train__steps=6, checkpoint__every=6, eval__every=6)
    assert res.summary["steps"] == 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_precisions(tmp_path, tiny, precision):
    res = run(tmp_path, tiny, train__device="cuda", train__precision=precision)
    assert res.summary["steps"] == 20


def test_branch_continues_from_step(tmp_path, tiny):
    a = run(tmp_path, tiny, "a", train__steps=10)
    b = trainwell.train("default", tiny(train__steps=15, optim__lr=1e-4), run_dir=tmp_path / "b",
                        branch_from=a.run_dir / "checkpoints" / "step-10")
    lines = [json.loads(x) for x in (b.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in lines) > 10 and b.summary["steps"] == 15


def test_generate_and_eval_use_checkpoint(tmp_path, tiny, cli, cli_here):
    res = run(tmp_path, tiny)
    out = trainwell.generate(res.run_dir, "import ", max_new_tokens=12, n=2, temperature=0.0)
    assert len(out["samples"]) == 2 and all(s.startswith("import ") for s in out["samples"])
    assert out["samples"][0] == out["samples"][1]  # greedy is deterministic
    assert out["ms_per_token"] > 0
    # a stop string taken from the greedy text ends it there (cut before the string)
    stop = out["samples"][0][len("import ") + 4:][:2]
    cut = trainwell.generate(res.run_dir, "import ", max_new_tokens=12, n=2, temperature=0.0, stop=(stop,))
    want = "import " + out["samples"][0][len("import "):].split(stop)[0]
    assert cut["samples"] == [want, want]
    ev = trainwell.evaluate(res.run_dir, "step-20")
    assert ev["val/loss"] == pytest.approx(res.summary["val_loss"], abs=1e-3)
    p = cli("generate", str(res.run_dir), "--prompt", "x = ", "--max-new-tokens", "5", "--top-k", "3",
            "--stop", "\n")
    assert p.returncode == 0 and p.stdout.count("x = ") == 1 and "ms/token" in p.stderr
    p = cli("eval", str(res.run_dir))
    assert p.returncode == 0 and "val/loss" in p.stdout
    p = cli_here("report", str(res.run_dir))  # (in this process: tests/conftest.py, run_cli_here)
    assert p.returncode == 0 and "best val loss" in p.stdout and "loss.png" in p.stdout
    p = cli_here("eval", str(res.run_dir), "--checkpoint", "step-999")
    assert p.returncode == 2 and "not found" in p.stderr


def test_default_recipe_on_stdlib_tiny(tmp_path, tiny):
    """The shipped default recipe, unchanged data source (the stdlib), shrunk model and steps."""
    sets = [s for s in tiny(train__steps=4, checkpoint__every=4, eval__every=4)
            if not s.startswith(("data.source", "data.path", "data.val_fraction"))]
    res = trainwell.train("default", sets, run_dir=tmp_path / "std")
    assert res.summary["data"]["val_files"] > 10 and res.summary["data"]["train_files"] > 500
    assert res.summary["steps"] == 4
