"""trainwell's DPO and GRPO against Hugging Face TRL on the same model size, batch and data, in one
invocation: seconds per optimizer step, peak resident memory, and how much each learned in N steps.

    python bench/vs_trl.py [--steps 40] [--threads 2] [--venv /tmp/trainwell-trl-venv] [--work DIR]

TRL (1.16) is installed into its own virtual environment (created here when missing: a plain venv with
``pip install torch==2.13.0 trl==1.16.0``; it is not a trainwell dependency) and runs as its own
process; so does every trainwell configuration. Each process reports the wall time between the
ends of consecutive optimizer steps (median over steps 3 .. N-1: the first are warm-up, trainwell's
last also saves a checkpoint and evaluates) and its peak RSS (``ru_maxrss``: everything the process
held, imports included). Both sides train in fp32 (TRL's configs default to bf16 autocast: set off),
or both in bf16 with ``--precision bf16`` (TRL's bf16 autocast, trainwell's ``train.precision = "bf16"``).

Shared by both sides, built here: a character tokenizer over the data's characters (a Hugging Face
``PreTrainedTokenizerFast``, one token per character, plus an end-of-text token), a GPT-2 of 4 layers x
128 (4 heads, context 128) with random weights saved as a local folder (TRL's model; trainwell runs its
own GPT of the same size, and that very folder through ``model.name = "hf_causal"``), and the data:
the built-in stdlib preference pairs (true 64-character continuation vs a corrupted copy; prompt <= 64
characters; rows with non-ASCII characters left out) and their prompts.

    DPO    16 pairs per step, sequences up to 128 tokens, beta 0.1, lr 5e-4 constant, from random init;
           the reference is a second model or precomputed log-probs. Learning: held-out preference
           accuracy (rewards/accuracies on 256 held-out pairs) after N steps.
    GRPO   8 prompts x 4 completions x 64 new tokens per step (one step per generation), temperature 1,
           reward = share of a completion's characters that are lower-case letters or spaces (random
           weights start near 0.3), beta 0 and 0.04. Learning: mean reward of one completion for each
           of 64 held-out prompts after N steps.
    PPO    TRL 1.16 has no PPOTrainer any more, so trainwell's PPO for LMs (value head, KL penalty, GAE;
           32 prompts x 1 completion, one step per rollout: the same 32 completions per step) is timed
           against trainwell's own GRPO.

Wall-clock numbers are only meaningful on a quiet machine (nothing else running); memory is fine anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# before anything here imports trainwell, whose import sets GOMP_SPINCOUNT in os.environ
# (trainwell/threads.py): TRL's processes get the environment its users have
PLAIN_ENV = dict(os.environ)
REWARD = textwrap.dedent('''
    """The GRPO reward of bench/vs_trl.py (both sides import it)."""


    def letters(prompts, completions, **kwargs):
        return [sum(ch.islower() or ch == " " for ch in c) / max(len(c), 1) for c in completions]
''')

COMMON = textwrap.dedent('''
    import json, os, resource, statistics, sys, time
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    torch.manual_seed(0)
    work, steps = __import__("pathlib").Path(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, str(work))

    def report(times, learned, **extra):
        steady = times[2:-1] or times
        print("RESULT " + json.dumps({"s_per_step": statistics.median(steady), "steps": len(times),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "learned": learned, **extra}))

    def rows(name):
        return [json.loads(l) for l in (work / name).read_text().splitlines() if l.strip()]
''')

TRL_SCRIPT = COMMON + textwrap.dedent('''
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    kind, option = sys.argv[1], sys.argv[5]
    folder = str(work / "gpt2")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    times, last = [], [None]

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if last[0] is not None:
                times.append(now - last[0])
            last[0] = now

    common = dict(output_dir=str(work / f"trl-{kind}-{option}"), max_steps=steps, report_to="none", logging_steps=10,
                  save_strategy="no", eval_strategy="no", use_cpu=True, dataloader_num_workers=0,
                  seed=int(os.environ.get("VS_TRL_SEED", "0")),
                  lr_scheduler_type="constant", warmup_steps=0, disable_dropout=True,
                  bf16=os.environ["VS_TRL_PRECISION"] == "bf16")  # TRL's own default is bf16 autocast: set by --precision
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer
        args = DPOConfig(per_device_train_batch_size=16, learning_rate=5e-4, beta=0.1, max_length=128,
                         precompute_ref_log_probs=option == "precompute", per_device_eval_batch_size=64, **common)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows("pairs_train.jsonl")),
                             eval_dataset=Dataset.from_list(rows("pairs_eval.jsonl")), processing_class=tok,
                             callbacks=[Timer()])
        trainer.train()
        learned = trainer.evaluate()["eval_rewards/accuracies"]
    else:
        from trl import GRPOConfig, GRPOTrainer
        from rewards import letters
        args = GRPOConfig(per_device_train_batch_size=32, num_generations=4, max_completion_length=64,
                          generation_batch_size=32, learning_rate=5e-4, beta=float(option), temperature=1.0,
                          top_k=0, **common)
        trainer = GRPOTrainer(model=model, reward_funcs=[letters], args=args,
                              train_dataset=Dataset.from_list(rows("prompts_train.jsonl")), processing_class=tok,
                              callbacks=[Timer()])
        trainer.train()
        held = [r["prompt"] for r in rows("prompts_eval.jsonl")][:64]
        tok.padding_side = "left"
        enc = tok(held, return_tensors="pt", padding=True, add_special_tokens=False)
        model = trainer.model.eval()
        torch.manual_seed(12345)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=64,
                                 pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        learned = statistics.mean(letters(held, texts))
    report(times, learned, parameters=sum(p.numel() for p in model.parameters()))
''')

OURS_SCRIPT = COMMON + textwrap.dedent('''
    import trainwell
    from trainwell.engine.job import evaluate
    recipe, sets = sys.argv[1], json.loads(sys.argv[5])
    t = trainwell.trainer(recipe, sets, run_dir=work / f"ours-{abs(hash(sys.argv[5]))}")
    times, last = [], time.perf_counter()
    for _ in range(steps):
        t.fit(1)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    metrics = evaluate(t.job, t.device, t.precision.autocast)
    key = "val/rewards/accuracies" if "val/rewards/accuracies" in metrics else "val/reward"
    report(times, metrics[key], parameters=sum(p.numel() for p in t.model.parameters()))
    t.close()
''')


def ensure_trl(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # its own packages, not ours
    if subprocess.run([str(py), "-c", "import trl"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "trl==1.16.0"], check=True)
    return py


def build_assets(work: Path) -> None:
    """Data files, the reward module and the GPT-2 folder with its character tokenizer."""
    sys.path.insert(0, str(ROOT))
    from trainwell.data.code_tasks import stdlib_rows

    ascii_only = lambda rows: [r for r in rows if all(v.isascii() for v in r.values())]  # noqa: E731
    pairs, held_pairs = map(ascii_only, stdlib_rows("pairs", prompt_chars=64, completion_chars=64, eval_fraction=0.05))
    sft, held = map(ascii_only, stdlib_rows("sft", prompt_chars=64, completion_chars=64, eval_fraction=0.05))
    files = {"pairs_train.jsonl": pairs, "pairs_eval.jsonl": (held_pairs * 5)[:256],
             "prompts_train.jsonl": [{"prompt": r["prompt"]} for r in sft],
             "prompts_eval.jsonl": [{"prompt": r["prompt"]} for r in held]}
    for name, items in files.items():
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    (work / "rewards.py").write_text(REWARD)
    chars = sorted({ch for items in files.values() for r in items for v in r.values() for ch in v})
    script = textwrap.dedent(f'''
        import json, sys, torch
        import tokenizers
        from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
        chars = json.loads({json.dumps(json.dumps(chars))})
        vocab = {{c: i for i, c in enumerate(chars)}}
        vocab["<|endoftext|>"] = len(chars)
        tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = tokenizers.decoders.Fuse()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
        assert fast.decode(fast("def f(x):\\n  return x", add_special_tokens=False)["input_ids"]) == "def f(x):\\n  return x"
        fast.save_pretrained(sys.argv[1])
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=128, n_layer=4, n_head=4,
                            bos_token_id=len(chars), eos_token_id=len(chars), pad_token_id=len(chars))
        GPT2LMHeadModel(config).save_pretrained(sys.argv[1])
    ''')
    subprocess.run([sys.executable, "-c", script, str(work / "gpt2")], check=True)


def run(py: str, script: str, args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([py, "-c", script, *args], capture_output=True, text=True, env=env, timeout=3600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"failed: {' '.join(args[:1] + args[4:])}\n{out.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


def ours_sets(kind: str, work: Path, steps: int, model: str, precision: str = "fp32", seed: int | None = None,
              **extra: object) -> list[str]:
    gpt = {"model.n_layer": 4, "model.n_head": 4, "model.n_embd": 128}
    model_keys = gpt if model == "gpt" else {"model.name": "hf_causal", "model.path": str(work / "gpt2")}
    values: dict[str, object] = {
        **model_keys, "train.init_from": "", "train.steps": steps, "train.threads": 0, "optim.lr": 5e-4,
        "schedule.name": "constant", "schedule.warmup_steps": 0, "eval.every": 0, "eval.samples": 0,
        "checkpoint.every": steps, "log.every": 10, "log.progress": "off", "log.plots": False, "log.tensorboard": False,
        "data.eval_samples": 0, "data.context": 128, "train.precision": precision,
    }
    if seed is not None:
        values["train.seed"] = seed
    if kind == "dpo":
        values.update({"data.path": str(work / "pairs_train.jsonl"), "data.eval_path": str(work / "pairs_eval.jsonl"),
                       "train.batch_size": 16, "eval.batches": 16, "objective.beta": 0.1})
    else:
        values.update({"data.path": str(work / "prompts_train.jsonl"), "data.eval_path": str(work / "prompts_eval.jsonl"),
                       "data.max_new_tokens": 64, "data.eval_prompts": 64, "data.eval_rewards": [],
                       "objective.reward_model": "", "objective.reward_funcs": ["rewards:letters"]})
    values.update(extra)
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "trainwell-trl-venv"))
    ap.add_argument("--work", default="")
    ap.add_argument("--only", default="", help="'|'-separated parts of row names to run (row names contain "
                    "commas), e.g. --only 'DPO' or --only 'its GPT, beta 0.04|TRL GRPOTrainer, beta 0.04' (default: all)")
    ap.add_argument("--seed", type=int, default=None,
                    help="data-order seed of both sides (TRL's seed, trainwell's train.seed); default TRL 0, "
                         "trainwell its recipe's 1337. One seed's learned numbers move by +-0.05.")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="both sides (TRL: bf16 autocast, its own default; trainwell: train.precision)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="vs-trl-"))
    work.mkdir(parents=True, exist_ok=True)
    trl_py = str(ensure_trl(Path(args.venv)))
    if not (work / "gpt2" / "config.json").is_file():
        build_assets(work)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(work)]), "OMP_NUM_THREADS": str(args.threads),
           "TRAINWELL_CACHE": os.environ.get("TRAINWELL_CACHE", str(work / "cache")), "VS_TRL_PRECISION": args.precision}
    trl_env = {**PLAIN_ENV, "PYTHONPATH": str(work), "OMP_NUM_THREADS": str(args.threads),
               "VS_TRL_PRECISION": args.precision, "VS_TRL_SEED": str(args.seed or 0)}
    n, th = str(args.steps), str(args.threads)
    rows = [  # name, interpreter, script, args (kind/recipe, option)
        ("TRL DPOTrainer, reference model", trl_py, TRL_SCRIPT, ["dpo", "model"], trl_env),
        ("TRL DPOTrainer, precompute_ref_log_probs", trl_py, TRL_SCRIPT, ["dpo", "precompute"], trl_env),
        ("trainwell DPO, its GPT, precomputed reference", sys.executable, OURS_SCRIPT,
         ["code_dpo", json.dumps(ours_sets("dpo", work, args.steps, "gpt", args.precision, args.seed, **{"objective.reference": "precompute"}))], env),
        ("trainwell DPO, its GPT, reference model", sys.executable, OURS_SCRIPT,
         ["code_dpo", json.dumps(ours_sets("dpo", work, args.steps, "gpt", args.precision, args.seed, **{"objective.reference": "model"}))], env),
        ("trainwell DPO, TRL's GPT-2 folder, precomputed", sys.executable, OURS_SCRIPT,
         ["code_dpo", json.dumps(ours_sets("dpo", work, args.steps, "hf", args.precision, args.seed, **{"objective.reference": "precompute"}))], env),
        ("TRL GRPOTrainer, beta 0", trl_py, TRL_SCRIPT, ["grpo", "0.0"], trl_env),
        ("TRL GRPOTrainer, beta 0.04", trl_py, TRL_SCRIPT, ["grpo", "0.04"], trl_env),
        ("trainwell GRPO, its GPT, beta 0", sys.executable, OURS_SCRIPT,
         ["code_grpo", json.dumps(ours_sets("grpo", work, args.steps, "gpt", args.precision, args.seed, **{"objective.beta": 0.0}))], env),
        ("trainwell GRPO, its GPT, beta 0.04", sys.executable, OURS_SCRIPT,
         ["code_grpo", json.dumps(ours_sets("grpo", work, args.steps, "gpt", args.precision, args.seed, **{"objective.beta": 0.04}))], env),
        ("trainwell GRPO, TRL's GPT-2 folder, beta 0", sys.executable, OURS_SCRIPT,
         ["code_grpo", json.dumps(ours_sets("grpo", work, args.steps, "hf", args.precision, args.seed, **{"objective.beta": 0.0}))], env),
        ("trainwell PPO, its GPT, 32 x 1 completions", sys.executable, OURS_SCRIPT,
         ["code_ppo", json.dumps(ours_sets("grpo", work, args.steps, "gpt", args.precision, args.seed, **{
             "data.prompts_per_rollout": 32, "data.group_size": 1, "data.update_epochs": 1, "data.minibatch_size": 0,
             "objective.kl_coef": 0.05}))], env),
    ]
    only = {s.strip() for s in args.only.split("|") if s.strip()}
    results = {}
    for name, py, script, (a, b), e in rows:
        if only and not any(o in name for o in only):
            continue
        results[name] = r = run(py, script, [a, th, str(work), n, b], e)
        print(f"{name:<48} {r['s_per_step']:7.3f} s/step  {r['peak_rss_mb']:7.0f} MiB  learned {r['learned']:.3f}"
              f"  ({r['parameters']:,} parameters)", flush=True)

    def ratio(ours: str, theirs: str, what: str) -> str:
        if ours not in results or theirs not in results:
            return ""
        return f"{results[ours][what] / results[theirs][what]:.2f}"

    pairs = [("trainwell DPO, its GPT, precomputed reference", "TRL DPOTrainer, precompute_ref_log_probs"),
             ("trainwell DPO, its GPT, reference model", "TRL DPOTrainer, reference model"),
             ("trainwell DPO, TRL's GPT-2 folder, precomputed", "TRL DPOTrainer, precompute_ref_log_probs"),
             ("trainwell GRPO, its GPT, beta 0", "TRL GRPOTrainer, beta 0"),
             ("trainwell GRPO, its GPT, beta 0.04", "TRL GRPOTrainer, beta 0.04"),
             ("trainwell GRPO, TRL's GPT-2 folder, beta 0", "TRL GRPOTrainer, beta 0"),
             ("trainwell PPO, its GPT, 32 x 1 completions", "trainwell GRPO, its GPT, beta 0.04")]
    print("\n| trainwell | vs | time / step | peak RSS | learned (trainwell / other) |\n|---|---|---|---|---|")
    for ours, theirs in pairs:
        if ours in results and theirs in results:
            print(f"| {ours} | {theirs} | {ratio(ours, theirs, 's_per_step')} | {ratio(ours, theirs, 'peak_rss_mb')} | "
                  f"{results[ours]['learned']:.3f} / {results[theirs]['learned']:.3f} |")
    import torch

    print(f"\npython {sys.version.split()[0]}, torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cpus, "
          f"{args.steps} steps, {args.precision} both sides; work dir {work}")
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
