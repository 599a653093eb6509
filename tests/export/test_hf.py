"""`trainwell export RUN --to hf OUT`: transformers loads the folder offline and computes the run's
function (logits to 1e-4, the same greedy text as `trainwell generate --temperature 0`), for a
plain GPT, one with biases and untied embeddings, and a LoRA run (merged, or base + PEFT adapter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import trainwell
from tinyrun import needs, tiny_sets
from trainwell.cli import app
from trainwell.config import load_config, to_toml
from trainwell.inference import load_for_inference
from trainwell.export.hf import ExportError, export_hf

pytestmark = [needs("transformers", "peft"),  # imported where used: peft takes ~5 s to import
              pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")]  # peft vs transformers 5

PROMPTS = ["def ", "    return self."]
NEW_TOKENS = 12  # prompt + continuation stay within the tiny models' 32-token context


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # loading must never need the hub
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def untied_run(tiny_text, tmp_path_factory) -> Path:
    """Biases on, untied output layer, 2 steps: still near its random start, so greedy decoding
    walks through many different characters (a trained tiny model only repeats spaces)."""
    run = tmp_path_factory.mktemp("export") / "untied"
    trainwell.train("default", tiny_sets(tiny_text, model__bias=True, model__tie_embeddings=False, train__steps=2,
                                         checkpoint__every=2, eval__every=2, eval__samples=0, log__plots=False,
                                         log__tensorboard=False, log__progress="off"), run_dir=run)
    return run


@pytest.fixture(scope="session")
def lora_run(paradigm_run, tiny_text, tmp_path_factory) -> Path:
    """LoRA on the tiny GPT run, with a step large enough that the adapter changes the logits."""
    run = tmp_path_factory.mktemp("export") / "lora"
    base = paradigm_run("gpt").run_dir / "checkpoints" / "step-30"
    trainwell.train("finetune_lora", tiny_sets(tiny_text, train__init_from=str(base), train__steps=10, optim__lr=0.02,
                                               checkpoint__every=10, eval__every=10, eval__samples=0, eval__retain=False,
                                               log__plots=False, log__tensorboard=False, log__progress="off"),
                    run_dir=run)
    return run


def hf_logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def our_logits(run: Path, ids: torch.Tensor, merge: bool = False) -> torch.Tensor:
    _, job, _, device = load_for_inference(run, merge=merge)
    with torch.inference_mode():
        return job.model(ids.to(device)).float().cpu()


def greedy(model, tok, prompt: str) -> str:
    enc = tok(prompt, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)
    return tok.decode(out[0])


def check_round_trip(run: Path, folder: Path, *, merge: bool = False, adapter: bool = False) -> None:
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    if adapter:
        model = peft.PeftModel.from_pretrained(model, folder / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(folder)
    val = (Path(load_config(str(run / "config.toml")).data.path)).read_text(encoding="utf-8")[-400:]
    ids = torch.tensor([tok(val[i:i + 32])["input_ids"] for i in (0, 100, 200)])  # real text, full context
    assert ids.shape == (3, 32)
    diff = (hf_logits(model, ids) - our_logits(run, ids, merge=merge)).abs().max().item()
    assert diff <= 1e-4, diff
    for prompt in PROMPTS:
        ours = trainwell.generate(run, prompt, max_new_tokens=NEW_TOKENS, temperature=0, merge=merge)["samples"][0]
        assert greedy(model, tok, prompt) == ours


def test_plain_gpt_round_trips(paradigm_run, tmp_path):
    from typer.testing import CliRunner

    run = paradigm_run("gpt").run_dir
    result = CliRunner().invoke(app, ["export", str(run), "--to", "hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "hf"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= \
        {p.name for p in folder.iterdir()}
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    assert (cfg.model_type, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.n_positions, cfg.vocab_size) == ("gpt2", 2, 2, 32, 32, 44)
    assert cfg.activation_function == "gelu" and cfg.tie_word_embeddings and cfg.layer_norm_epsilon == 1e-5
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:  # GPT-2's own parameter names
        assert "transformer.h.0.attn.c_attn.weight" in set(f.keys()) and f.get_tensor(
            "transformer.h.0.attn.c_attn.weight").shape == (32, 96)
    check_round_trip(run, folder)


def test_tokenizer_is_the_runs_character_vocabulary(paradigm_run, tmp_path):
    from transformers import AutoTokenizer

    run = paradigm_run("gpt").run_dir
    export_hf(run, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    _, job, _, _ = load_for_inference(run)
    text = "def f(x):\n\treturn x  # ok \u00fc"  # the tiny corpus has neither tab nor u-umlaut: both <unk>
    ids = job.encode(text)
    assert tok(text)["input_ids"] == ids
    assert tok.decode(ids) == job.decode(ids)
    assert tok.decode(job.encode("def f(x):\n    return x")) == "def f(x):\n    return x"


def test_biases_and_untied_embeddings_round_trip(untied_run, tmp_path):
    folder = tmp_path / "hf"
    from transformers import AutoConfig

    export_hf(untied_run, folder)
    cfg = AutoConfig.from_pretrained(folder)
    assert not cfg.tie_word_embeddings
    check_round_trip(untied_run, folder)
    sample = trainwell.generate(untied_run, "def ", max_new_tokens=NEW_TOKENS, temperature=0)["samples"][0]
    assert len(set(sample[4:])) >= 4, sample  # the comparison above was not between runs of one character


def test_lora_merged_and_as_base_plus_peft_adapter(lora_run, tmp_path):
    merged, split = tmp_path / "merged", tmp_path / "split"
    export_hf(lora_run, merged, merge=True)
    check_round_trip(lora_run, merged, merge=True)
    out = export_hf(lora_run, split)
    assert out["adapter_dir"] == split / "adapter"
    check_round_trip(lora_run, split, merge=True, adapter=True)
    # the adapter matters: the base alone computes something else
    from transformers import AutoModelForCausalLM

    ids = torch.arange(32).remainder(44).unsqueeze(0)
    base_only = hf_logits(AutoModelForCausalLM.from_pretrained(split).eval(), ids)
    assert (base_only - our_logits(lora_run, ids, merge=True)).abs().max() > 1e-3
    from peft import PeftConfig

    cfg = PeftConfig.from_pretrained(split / "adapter")
    assert cfg.fan_in_fan_out and set(cfg.target_modules) >= {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_fc"}


def _config_only(tmp_path: Path, recipe: str, *sets: str) -> Path:
    run = tmp_path / recipe
    run.mkdir()
    (run / "config.toml").write_text(to_toml(load_config(recipe, list(sets))))
    return run


@pytest.mark.parametrize("recipe, sets, message", [
    ("default", ["model.position=rope"], "rotary positions"),
    ("default", ["model.qk_norm=true", "model.norm='rmsnorm'"], "model.norm = 'rmsnorm', model.qk_norm = True"),
    ("code_mlm", [], "masked-LM encoder"),
    ("cartpole_ppo", [], "only GPT language models"),
    ("finetune_qlora", [], "4-bit NF4"),
    ("default", [], "has none"),  # --merge without adapters
])
def test_what_gpt2_cannot_hold_is_refused_in_one_sentence(tmp_path, recipe, sets, message):
    run = _config_only(tmp_path, recipe, *sets)
    with pytest.raises(ExportError, match=message):
        export_hf(run, tmp_path / "out", merge=message == "has none")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_folder_and_unknown_formats(paradigm_run, tmp_path):
    from typer.testing import CliRunner

    run = paradigm_run("gpt").run_dir
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    for args, message in (([str(run), str(full)], "not an empty folder"),
                          ([str(run), str(tmp_path / "x"), "--to", "onnx"], "unknown export format")):
        result = CliRunner().invoke(app, ["export", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "x").exists()
