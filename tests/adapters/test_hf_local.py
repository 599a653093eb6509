"""A Hugging Face model from a local folder (config + safetensors + tokenizer), built here from a
config, fine-tuned on a text-classification table: fully and with LoRA; nothing is downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import trainwell
from trainwell.errors import ConfigError

from tinyrun import needs

pytestmark = needs("transformers", "peft")

WORDS = {"code": "def class return import lambda yield async await".split(),
         "prose": "the king queen lord love night sweet death".split()}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    import transformers

    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(w for ws in WORDS.values() for w in ws)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(str(folder))  # config.json + model.safetensors
    return folder


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    rng = random.Random(0)
    rows = ["text,label"]
    for i in range(120):
        label = "code" if i % 2 else "prose"
        rows.append(" ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(3, 8))) + f",{label}")
    path = tmp_path_factory.mktemp("table") / "texts.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def sets(folder: Path, table: Path, **extra: object) -> list[str]:
    values = {"data.name": "table", "data.path": str(table), "data.text": "text", "data.label": "label",
              "model.name": "hf", "model.path": str(folder), "model.max_length": 12, "train.steps": 30,
              "train.epochs": 0, "train.batch_size": 16, "optim.lr": 3e-3, "schedule.warmup_steps": 3,
              "eval.every": 0, "checkpoint.every": 30, "log.every": 10, "log.progress": "lines",
              "log.plots": False, "log.tensorboard": False, "train.threads": 1, **extra}
    return [f"{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]


def test_local_hf_model_loads_pretrained_weights_and_fine_tunes(tmp_path, hf_folder, table):
    from safetensors.torch import load_file

    res = trainwell.train("hf_text_classify", sets(hf_folder, table, **{"optim.lr": 0.0}), run_dir=tmp_path / "lr0")
    saved = load_file(res.run_dir / "checkpoints" / "step-30" / "model.safetensors")
    original = load_file(hf_folder / "model.safetensors")
    key = "encoder.layer.0.attention.self.query.weight"
    key = key if key in original else "bert." + key
    assert torch.equal(saved["encoder." + key.removeprefix("bert.")], original[key])  # pretrained, not re-initialised

    res = trainwell.train("hf_text_classify", sets(hf_folder, table), run_dir=tmp_path / "full")
    s = res.summary
    assert s["test_accuracy"] >= 0.9 and "baseline_tfidf_accuracy" in s


def test_lora_on_a_hugging_face_model_round_trips_through_peft(tmp_path, hf_folder, table):
    res = trainwell.train("hf_text_classify", sets(hf_folder, table, **{"adapter.method": "lora",
                                                                  "adapter.targets": ["query", "value"]}),
                          run_dir=tmp_path / "lora")
    s = res.summary
    assert s["trainable_parameters"] < 0.2 * s["total_parameters"]
    from trainwell.inference import load_for_inference

    _, job, _, _ = load_for_inference(res.run_dir)
    x = torch.randint(5, 21, (3, 12))
    with torch.no_grad():
        y = job.model(x)
    cfg = json.loads((res.run_dir / "adapter" / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["query", "value"]
    # peft's own loader, on a fresh model from the folder, gives the same outputs (the new head is
    # saved with the adapter as a peft modules_to_save copy)
    import peft

    from trainwell.config import load_config
    from trainwell.paradigms import build_job

    fresh = build_job(load_config(str(res.run_dir / "config.toml"), ["adapter.method=none"]), torch.device("cpu")).model
    loaded = peft.PeftModel.from_pretrained(fresh, str(res.run_dir / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=0, atol=1e-5)


def test_hf_needs_a_local_folder_and_text(tmp_path, table, hf_folder):
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        trainwell.train("hf_text_classify", sets(tmp_path, table), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="classifies text: use data.name = .table. with data.text set"):
        trainwell.train("hf_text_classify", sets(hf_folder, table, **{"data.text": ""}), run_dir=tmp_path / "y")
