"""`trainwell export RUN_DIR --to hf OUT_DIR`: a trained GPT as a Hugging Face transformers folder.

The folder holds a GPT-2 config with the run's shapes, ``model.safetensors`` in GPT-2's parameter
names, and a character tokenizer for the run's vocabulary, so that
``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and ``AutoTokenizer.from_pretrained(OUT_DIR)``
load it offline and compute the same function. What our GPT does that GPT-2 does not, and how it
maps:

- ``model.bias = false``: GPT-2 always has biases; they are written as zeros (same function).
- ``model.tie_embeddings = false``: ``tie_word_embeddings = false`` and a separate ``lm_head.weight``.
- GELU: ours is the exact (erf) GELU; GPT-2's default is the tanh approximation ("gelu_new"), so
  the config says ``activation_function = "gelu"`` (transformers' exact GELU).
- layer norm epsilon 1e-5 and attention scaling 1/sqrt(head_dim): GPT-2's own
  (``scale_attn_weights = true``, no per-layer scaling, no reordered upcast).
- Linear layers: GPT-2 stores them as Conv1D, (in, out), so weights are transposed; the fused QKV
  projection splits in the same q, k, v order.
- ``model.activation = "relu2"``: transformers' ``relu2``; ``model.mlp_ratio``: ``n_inner``.
- ``model.position = "rope"``: GPT-2 has only learned absolute positions: refused. So are
  ``model.norm = "rmsnorm"``, ``model.qk_norm`` and ``model.logit_softcap`` (GPT-2 has none of them).
- an MLM encoder (bidirectional attention) is not a causal LM: refused. QLoRA: the base is 4-bit
  NF4, which a GPT-2 float checkpoint cannot hold exactly: refused.

A LoRA run exports either merged (``--merge``: one plain model) or as the base plus the adapter in
PEFT's layout under ``OUT_DIR/adapter`` with GPT-2's module names (``c_attn``, ``c_proj``,
``c_fc``; the run's own ``RUN_DIR/adapter`` names trainwell's modules), which
``PeftModel.from_pretrained(base, OUT_DIR/adapter)`` loads. Every export is checked before it is
kept: the written folder is loaded back with transformers (and peft) and its logits compared with
the run's model on the same tokens.

Beyond ``n_positions`` tokens, trainwell's sampler slides a window of the last ``context`` tokens;
transformers' GPT-2 cannot go past ``n_positions``, so generation agrees within the context.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from trainwell.errors import ConfigError, TrainwellError

ATOL = 1e-4  # largest logit difference an export may show against the run's model
ADAPTER_DIR = "adapter"
_PREFIX = "base_model.model."  # the key prefix PeftModel's files carry

# (our module path, GPT-2's, whether GPT-2 stores it as a Conv1D: weight (in, out), transposed)
_MODULES = [
    (r"tok_emb", r"transformer.wte", False),
    (r"pos_emb", r"transformer.wpe", False),
    (r"blocks\.(\d+)\.ln1", r"transformer.h.\1.ln_1", False),
    (r"blocks\.(\d+)\.ln2", r"transformer.h.\1.ln_2", False),
    (r"blocks\.(\d+)\.attn\.qkv", r"transformer.h.\1.attn.c_attn", True),
    (r"blocks\.(\d+)\.attn\.proj", r"transformer.h.\1.attn.c_proj", True),
    (r"blocks\.(\d+)\.mlp\.fc", r"transformer.h.\1.mlp.c_fc", True),
    (r"blocks\.(\d+)\.mlp\.proj", r"transformer.h.\1.mlp.c_proj", True),
    (r"ln_f", r"transformer.ln_f", False),
    (r"lm_head", r"lm_head", False),
]


class ExportError(TrainwellError):
    """The run cannot be exported as asked (one sentence says why and what to do)."""


def gpt2_module(path: str) -> tuple[str, bool]:
    """Our module path -> (GPT-2's module path, stored as Conv1D)."""
    for ours, theirs, conv in _MODULES:
        if re.fullmatch(ours, path):
            return re.sub(ours, theirs, path), conv
    raise ExportError(f"the model has a module '{path}' that GPT-2 has no place for; it is not a trainwell GPT.")


def gpt2_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our plain GPT state dict -> GPT-2 names and layouts (fp32, contiguous)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, param = key.rsplit(".", 1)
        name, conv = gpt2_module(module)
        t = tensor.detach().float()
        out[f"{name}.{param}"] = (t.t() if conv and param == "weight" else t).contiguous().cpu()
    return out


def refuse_unsupported(cfg: Any, run_dir: Path) -> None:
    """One sentence for each run this export cannot represent faithfully."""
    model = cfg.model
    if cfg.data.name != "text" or model.name not in ("gpt", "encoder"):
        raise ExportError(f"the run in {run_dir} trains a '{model.name}' model on '{cfg.data.name}' data; only "
                          f"GPT language models (model.name = 'gpt') export to Hugging Face.")
    if model.name == "encoder" or cfg.objective.name != "lm":
        raise ExportError(f"the run in {run_dir} trains a bidirectional masked-LM encoder, not a causal language "
                          f"model; GPT-2 export needs a GPT run (model.name = 'gpt', objective.name = 'lm').")
    if model.position != "learned":
        raise ExportError(f"the run in {run_dir} uses rotary positions (model.position = 'rope'), which GPT-2 does "
                          f"not have (it adds learned position embeddings); only model.position = 'learned' exports.")
    other = [f"model.{k} = {getattr(model, k)!r}" for k, plain in (("norm", "layernorm"), ("qk_norm", False),
                                                                     ("logit_softcap", 0.0))
             if getattr(model, k, plain) != plain]
    if other:
        raise ExportError(f"the run in {run_dir} uses {', '.join(other)}, which GPT-2 does not have (layer norm, "
                          f"no QK-norm, uncapped logits); only runs without these options export.")
    if cfg.adapter.method == "qlora":
        raise ExportError(f"the run in {run_dir} is QLoRA: its base weights are 4-bit NF4, which a GPT-2 float "
                          f"checkpoint cannot hold exactly; export the pretrained run and apply the adapter in peft.")


def gpt2_config(model: Any, cfg: Any, tied: bool) -> Any:
    from transformers import GPT2Config

    n_embd = model.tok_emb.weight.shape[1]
    return GPT2Config(
        vocab_size=model.tok_emb.weight.shape[0], n_positions=model.context, n_embd=n_embd,
        n_layer=len(model.blocks), n_head=model.blocks[0].attn.n_head, n_inner=model.blocks[0].mlp.fc.out_features,
        # exact erf GELU, as F.gelu (GPT-2's default is the tanh "gelu_new"); or ReLU squared
        activation_function="relu2" if cfg.model.activation == "relu2" else "gelu",
        layer_norm_epsilon=1e-5, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False, resid_pdrop=cfg.model.dropout, embd_pdrop=cfg.model.dropout,
        attn_pdrop=cfg.model.dropout, tie_word_embeddings=tied,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,  # a character model has none
        architectures=["GPT2LMHeadModel"])


def char_tokenizer(vocab: list[str], context: int) -> Any:
    """One token per character (code point), ids as in the run's corpus vocabulary; characters
    outside it become the run's <unk> character when it has one (as trainwell's encoder does)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from trainwell.data.text import UNK

    unk = UNK if UNK in vocab else None
    # BPE with no merges and no pre-tokenizer splits text into its characters and looks each up;
    # Fuse joins them back without the spaces a WordPiece-style decoder would insert.
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(vocab)}, merges=[], unk_token=unk))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=unk, model_max_length=context,
                                   clean_up_tokenization_spaces=False)


def _split_lora(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A LoRA-injected state dict -> (the base model's own keys, adapter 'default' keys)."""
    base, lora = {}, {}
    for key, t in state.items():
        if ".lora_" in key:
            lora[key.replace(".default.", ".")] = t
        else:
            base[key.replace(".base_layer.", ".")] = t
    return base, lora


def _adapter_files(cfg: Any, lora: dict[str, torch.Tensor], folder: Path, base_dir: Path) -> None:
    """The adapter in PEFT's layout for GPT-2's module names (Conv1D: fan_in_fan_out)."""
    from safetensors.torch import save_file

    from trainwell.adapters.lora import lora_config

    weights, targets = {}, set()
    for key, t in lora.items():  # blocks.0.attn.qkv.lora_A.weight: A (r, in) and B (out, r) as in peft
        module, rest = key.split(".lora_", 1)
        name, _ = gpt2_module(module)
        targets.add(name)
        weights[f"{_PREFIX}{name}.lora_{rest}"] = t.detach().float().contiguous().cpu()
    a = cfg.adapter
    config = lora_config(a.rank, a.alpha, a.dropout, sorted(targets))
    config.fan_in_fan_out = True  # GPT-2's Conv1D keeps (in, out) weights; peft merges accordingly
    config.base_model_name_or_path = str(base_dir)
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def _check(ours: torch.nn.Module, theirs: torch.nn.Module, context: int, vocab_size: int) -> float:
    """Largest |logit difference| on two fixed random sequences of the full context."""
    ids = torch.randint(0, vocab_size, (2, context), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = ours(ids).float()
        b = theirs(input_ids=ids).logits.float()
    return float((a - b).abs().max())


def _model_card(run_dir: Path, checkpoint: Path, merged: bool, adapter: bool, diff: float) -> str:
    load = ("from peft import PeftModel\nmodel = PeftModel.from_pretrained("
            "AutoModelForCausalLM.from_pretrained(DIR), DIR + '/adapter')" if adapter
            else "model = AutoModelForCausalLM.from_pretrained(DIR)")
    how = "LoRA merged into the base" if merged else ("base model + LoRA adapter in adapter/" if adapter
                                                       else "the trained weights")
    return (f"# trainwell export\n\nA character-level GPT trained with trainwell, exported as GPT-2 "
            f"({how}).\n\n- run: `{run_dir}`\n- checkpoint: `{checkpoint.name}`\n"
            f"- largest logit difference from the run's model at export: {diff:.2e}\n\n"
            f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\nDIR = 'path/to/this/folder'\n"
            f"tok = AutoTokenizer.from_pretrained(DIR)\n{load}\n"
            f"ids = tok('def ', return_tensors='pt')\n"
            f"print(tok.decode(model.generate(**ids, max_new_tokens=40, do_sample=False)[0]))\n```\n")


def export_hf(run_dir: Path, out_dir: Path, *, checkpoint: str | None = None, merge: bool = False) -> dict[str, Any]:
    """Write the run's GPT (at ``checkpoint``, default newest) to ``out_dir``; return what was written."""
    from trainwell.inference import load_for_inference, run_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = run_config(run_dir)
    refuse_unsupported(cfg, run_dir)
    lora = cfg.adapter.method == "lora"
    if merge and not lora:
        raise ExportError(f"--merge folds LoRA adapters into the base, but the run in {run_dir} has none "
                          f"(adapter.method = '{cfg.adapter.method}'); export it without --merge.")
    if lora and not merge and cfg.adapter.modules_to_save:
        raise ExportError(f"the run in {run_dir} also trains whole modules ({', '.join(cfg.adapter.modules_to_save)}, "
                          f"adapter.modules_to_save); export it merged with --merge.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} already exists and is not an empty folder; pass a new folder (nothing was written).")
    try:
        import peft  # noqa: F401  (the adapter check loads with peft)
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("export to Hugging Face needs transformers (and peft for LoRA runs): "
                          "pip install 'trainwell[adapters]'.") from None
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights: 100%" bars for a folder of a few MB

    _, job, path, _ = load_for_inference(run_dir, checkpoint, merge=merge)
    model = job.model.cpu().float()
    state = model.state_dict()
    base_state, lora_state = _split_lora(state) if lora and not merge else (state, {})
    tied = model.lm_head.weight is model.tok_emb.weight  # after a merge too (lm_head is never a target)
    config = gpt2_config(model, cfg, tied)
    vocab = [job.decode([i]) for i in range(config.vocab_size)]

    hf = GPT2LMHeadModel(config)
    own = gpt2_state(base_state)
    want = hf.state_dict()
    for key, t in want.items():  # bias = false: GPT-2 has biases; zeros compute the same function
        if key not in own and key.endswith(".bias"):
            own[key] = torch.zeros_like(t)
    if tied:
        own["lm_head.weight"] = own["transformer.wte.weight"]
    missing, extra = sorted(set(want) - set(own)), sorted(set(own) - set(want))
    if missing or extra:
        raise ExportError(f"the run's GPT does not fit GPT-2's layout (missing {missing[:3]}, extra {extra[:3]}).")
    hf.load_state_dict(own, strict=True)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf.save_pretrained(str(tmp))
        char_tokenizer(vocab, model.context).save_pretrained(str(tmp))
        if lora_state:
            _adapter_files(cfg, lora_state, tmp / ADAPTER_DIR, out_dir.resolve())
        # load the folder back as a user would, and compare with the run's model
        loaded = AutoModelForCausalLM.from_pretrained(str(tmp)).eval()
        if lora_state:
            import warnings

            from peft import PeftModel

            with warnings.catch_warnings():  # peft calls an attribute transformers 5 deprecates
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                loaded = PeftModel.from_pretrained(loaded, str(tmp / ADAPTER_DIR)).eval()
        diff = _check(model.eval(), loaded, model.context, config.vocab_size)
        if not diff <= ATOL:
            raise ExportError(f"the exported model's logits differ from the run's by {diff:.2e} (> {ATOL}); "
                              f"nothing was kept. Please report this with the run's config.toml.")
        (tmp / "README.md").write_text(_model_card(run_dir, path, merge, bool(lora_state), diff), encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out_dir": out_dir, "checkpoint": path, "max_logit_diff": diff, "tied_embeddings": tied,
            "adapter_dir": out_dir / ADAPTER_DIR if lora_state else None, "merged": merge,
            "vocab_size": config.vocab_size, "n_positions": model.context}
