"""Does learning from preferences align the code model? Measured against a ground truth, in one invocation.

Human labels do not exist here, so the truth is a program (as the DPO paper used a sentiment
classifier and Gao et al. 2022 a gold reward model): the **gold reward** of a completion is
``code_valid`` (trainwell/data/code_tasks.py) - the share of its code (no whitespace, no comments) up
to the last cut at which ``prompt + completion[:cut]`` still parses as Python. The reward model never
sees it; it only sees comparisons labelled from it with noise:

 1. pretrain: `trainwell train default` (the stdlib code GPT)                       -> WORK/default
 2. SFT: `trainwell train code_sft` from it                                          -> WORK/sft
 3. pairs: for each training prompt two completions sampled from the SFT policy (temperature 1,
    64 characters), labelled by Bradley-Terry from the gold reward: P(a > b) = sigmoid((g_a - g_b) / tau);
    pairs with equal gold are dropped (there is no preference). Held-out pairs come from held-out
    prompts (files the pretraining never saw). The label noise sets a known accuracy ceiling: the
    best possible predictor is right with probability sigmoid(|g_a - g_b| / tau) on each pair.
 4. reward model: `trainwell train code_reward` on those pairs                       -> WORK/rm
 5. policies from the SFT model, checkpoints kept along the way: DPO on the same pairs; PPO against the
    reward model with the KL penalty and without it; GRPO against the reward model and against the
    gold reward itself (the verifiable-reward setting)                                 -> WORK/<method>
 6. every checkpoint is scored on the held-out prompts (``--eval-samples`` completions each, temperature
    1, a fixed generator): gold reward, proxy reward (the reward model), and KL(pi || pi_sft) = the mean
    over samples of sum_t log pi(y_t) - log pi_sft(y_t); best-of-n from the SFT policy picks, per prompt,
    the completion the reward model likes best among n (KL = log n - (n - 1) / n, the standard bound);
    the KL-regularised optimum pi_sft exp(r / beta) is estimated on the same draw (see ``optimum``).

Writes bench/preferences.png (gold reward vs KL for every method; proxy and gold over training for PPO
and GRPO against the reward model: over-optimisation) and prints the tables of bench/RESULTS.md. Every stage is reused
when its output is already in WORK, so an interrupted invocation continues.

    python bench/preferences.py [--work runs/bench-preferences] [--size default|small] [--tau 0.1]
                                [--pretrain-steps 0] [--eval-samples 2] [--methods dpo,ppo,...] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainwell.data.code_tasks import stdlib_rows, valid_fraction  # noqa: E402

def grpo(steps: int, every: int, *, beta: float, lr: float = 1e-4, gold: bool = True, **more: object
         ) -> tuple[str, dict[str, object]]:
    """A GRPO method: against the gold reward itself (the verifiable-reward setting) or the reward model."""
    reward = {"objective.reward_funcs": ["code_valid"], "objective.reward_model": ""} if gold else {
        "objective.reward_funcs": []}
    return "code_grpo", {"train.steps": steps, "checkpoint.every": every, "objective.beta": beta, **reward,
                         "optim.lr": lr, **more}


# method -> (recipe, --set overrides): every policy starts from WORK/sft; checkpoints every `every` steps
METHODS: dict[str, tuple[str, dict[str, object]]] = {
    "dpo": ("code_dpo", {"train.steps": 400, "checkpoint.every": 40, "objective.beta": 0.1}),
    # a stronger pull to the reference: DPO's beta, PPO's KL coefficient (beta 0.1 / kl_coef 0.05 pass
    # KL 5 within the first 40 / 60 steps); checkpoints 4x as often, to see the low-KL end
    "dpo_beta05": ("code_dpo", {"train.steps": 200, "checkpoint.every": 10, "objective.beta": 0.5}),
    # three passes over the pairs instead of one, and IPO (a fixed target margin 1 / (2 beta), no push to infinity)
    "dpo_beta05_long": ("code_dpo", {"train.steps": 600, "checkpoint.every": 30, "objective.beta": 0.5}),
    "ipo_beta05": ("code_dpo", {"train.steps": 600, "checkpoint.every": 30, "objective.beta": 0.5,
                                "objective.loss_type": "ipo"}),
    "ppo": ("code_ppo", {"train.steps": 600, "checkpoint.every": 60, "objective.kl_coef": 0.05, "optim.lr": 1e-4}),
    "ppo_kl02": ("code_ppo", {"train.steps": 300, "checkpoint.every": 15, "objective.kl_coef": 0.2, "optim.lr": 1e-4}),
    "ppo_nokl": ("code_ppo", {"train.steps": 600, "checkpoint.every": 60, "objective.kl_coef": 0.0,
                              "objective.reference": "model", "optim.lr": 1e-4}),
    "grpo_rm": grpo(300, 30, beta=0.04, gold=False),
    "grpo_gold": grpo(300, 30, beta=0.04),
    # a stronger pull to the reference
    "grpo_gold_b05": grpo(300, 15, beta=0.5),
    "grpo_gold_b05_long": grpo(900, 45, beta=0.5),  # does the gold reward keep climbing at that KL?
    "grpo_gold_dr02": grpo(300, 15, beta=0.2, **{"objective.scale_rewards": "none"}),  # Dr. GRPO: raw rewards
    "grpo_gold_b05_lr3": grpo(300, 15, beta=0.5, lr=3e-4),
    # ... which spent KL at once (2 nats after 15 steps) for little gold; so the other way, less gradient noise
    # per step: a third of the step size, or four times the samples per step
    "grpo_gold_lr03": grpo(400, 20, beta=0.04, lr=3e-5),
    "grpo_gold_x4": grpo(100, 5, beta=0.04, **{"data.prompts_per_rollout": 32}),
    # the KL in the reward (r - beta log pi/pi_ref per completion, raw rewards): the exact policy gradient of
    # E[r] - beta KL, whose optimum pi_sft exp(r / beta) is the frontier; beta 0.2 aims at KL ~1
    "grpo_gold_klr": grpo(600, 30, beta=0.2, **{"objective.kl_in_reward": True, "objective.scale_rewards": "none"}),
    # ... and with 8x the completions per step (32 prompts x 8): the noise per step falls, the penalty stays
    "grpo_gold_klr_x8": grpo(150, 10, beta=0.2, **{"objective.kl_in_reward": True, "objective.scale_rewards": "none",
                                                   "data.prompts_per_rollout": 32, "data.group_size": 8}),
    "grpo_gold_klr_x8_long": grpo(300, 20, beta=0.2, **{"objective.kl_in_reward": True,
                                                        "objective.scale_rewards": "none",
                                                        "data.prompts_per_rollout": 32, "data.group_size": 8}),
    "grpo_rm_b05": grpo(300, 15, beta=0.5, gold=False),
    # PPO with the same lesson: 256 completions per rollout, two passes in minibatches of 128 (4 steps per
    # rollout), the per-token KL penalty strong enough for the reward model's scale (its scores spread ~4x the
    # gold's); against the reward model (what the issue asks) and against the gold reward (the algorithm's reach)
    "ppo_rm_x16": ("code_ppo", {"train.steps": 400, "checkpoint.every": 20, "objective.kl_coef": 1.0,
                                "optim.lr": 1e-4, "data.prompts_per_rollout": 256, "data.update_epochs": 2,
                                "data.minibatch_size": 128}),
    "ppo_gold_x16": ("code_ppo", {"train.steps": 400, "checkpoint.every": 20, "objective.kl_coef": 0.2,
                                  "optim.lr": 1e-4, "data.prompts_per_rollout": 256, "data.update_epochs": 2,
                                  "data.minibatch_size": 128, "objective.reward_model": "",
                                  "objective.reward_funcs": ["code_valid"], "data.eval_rewards": []}),
    # offline DPO with as many labels as online DPO gets (4 labelled pairs of SFT samples for each of the 9,028
    # training prompts, ~27k after ties, against online DPO's 300 x 128 pairs less its ties), same steps and batch
    "dpo_many": ("code_dpo", {"train.steps": 300, "checkpoint.every": 20, "objective.beta": 1.0, "data.path": "many",
                              "train.batch_size": 128, "optim.lr": 1e-4}),
    # online DPO (code_online_dpo): each step 128 prompts x 2 completions of the current policy, ordered by a judge.
    # The judge is the labeller of the offline pairs (Bradley-Terry from the gold reward, tau 0.1: the simulated
    # human), or the reward model. With labels P(a > b) = sigmoid((g_a - g_b) / tau), DPO's optimum is
    # pi_sft exp(g / (tau beta)): beta 1 aims at the gold optimum of beta 0.1 (KL ~1.5)
    "odpo_gold_bt": ("code_online_dpo", {"train.steps": 300, "checkpoint.every": 20, "objective.beta": 1.0,
                                         "objective.label_temperature": 0.1, "objective.reward_funcs": ["code_valid"],
                                         "objective.reward_model": "", "optim.lr": 1e-4,
                                         "data.prompts_per_rollout": 128}),
    "odpo_rm": ("code_online_dpo", {"train.steps": 300, "checkpoint.every": 20, "objective.beta": 1.0,
                                    "objective.reward_funcs": [], "optim.lr": 1e-4, "data.prompts_per_rollout": 128}),
    # the same with a reward that is pure noise (uniform, independent of the completion): the KL it reaches is
    # what gradient noise alone spends against that penalty
    "grpo_noise_klr": grpo(300, 30, beta=0.2, **{"objective.kl_in_reward": True, "objective.scale_rewards": "none",
                                                 "objective.reward_funcs": ["bench.preferences:uniform_reward"]}),
}
LABELS = {"sft": "SFT", "bon": "best-of-n (reward model)", "bon_gold": "best-of-n (gold, oracle)",
          "optimum_gold": "KL-regularised optimum for the gold reward (estimate)",
          "optimum_proxy": "KL-regularised optimum for the reward model (estimate)",
          "dpo": "DPO, beta 0.1", "dpo_beta05": "DPO, beta 0.5", "dpo_beta05_long": "DPO, beta 0.5, 3 epochs",
          "ipo_beta05": "IPO, beta 0.5, 3 epochs",
          "ppo": "PPO, KL penalty 0.05", "ppo_kl02": "PPO, KL penalty 0.2", "ppo_nokl": "PPO, no KL penalty",
          "grpo_rm": "GRPO, reward model", "grpo_rm_b05": "GRPO, reward model, beta 0.5",
          "grpo_gold": "GRPO, gold reward", "grpo_gold_b05": "GRPO, gold reward, beta 0.5",
          "grpo_gold_b05_long": "GRPO, gold reward, beta 0.5, 900 steps",
          "grpo_gold_dr02": "Dr. GRPO, gold reward, beta 0.2", "grpo_gold_b05_lr3": "GRPO, gold reward, beta 0.5, lr 3e-4",
          "grpo_gold_lr03": "GRPO, gold reward, lr 3e-5", "grpo_gold_x4": "GRPO, gold reward, 4x samples per step",
          "grpo_gold_klr": "GRPO, gold reward, KL in the reward, beta 0.2",
          "grpo_noise_klr": "GRPO, random reward, KL in the reward, beta 0.2",
          "grpo_gold_klr_x8": "GRPO, gold reward, KL in the reward, beta 0.2, 8x completions per step",
          "grpo_gold_klr_x8_long": "the same, 300 steps",
          "dpo_many": "DPO, beta 1, 9x the pairs (as many labels as online DPO)",
          "odpo_gold_bt": "online DPO, beta 1, pairs labelled as the offline ones (Bradley-Terry on gold)",
          "odpo_rm": "online DPO, beta 1, pairs ranked by the reward model",
          "ppo_rm_x16": "PPO, reward model, KL penalty 1.0, 256 completions per rollout",
          "ppo_gold_x16": "PPO, gold reward, KL penalty 0.2, 256 completions per rollout"}


NOISE = random.Random(0)


def uniform_reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
    """A reward that says nothing about the completion (grpo_noise_klr): U(0, 1), from a process-wide stream."""
    return [NOISE.random() for _ in completions]


def sets(values: dict[str, object]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v)}")]


THREADS = {"train.threads": 0}  # --threads: torch threads of every stage (not part of what is trained)


def train_stage(work: Path, name: str, recipe: str, values: dict[str, object]) -> Path:
    """`trainwell train RECIPE --run-dir WORK/name` (resumed if interrupted, skipped if finished)."""
    run = work / name
    if (run / "summary.json").is_file():
        return run
    started = (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    cmd = [sys.executable, "-m", "trainwell", "train"]
    cmd += ["--resume", str(run), *sets(THREADS)] if started else [recipe, "--run-dir", str(run),
                                                                  *sets({**values, **THREADS})]
    t0 = time.perf_counter()
    print(f"[{name}] {' '.join(cmd[3:])}", flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"[{name}] failed:\n{out.stderr[-4000:]}")
    print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


# --------------------------------------------------------------------------- models and sampling


class Policy:
    """A run's language model at one checkpoint, with its tokenizer (frozen, eval mode)."""

    def __init__(self, run: Path, checkpoint: str | None = None):
        from trainwell.paradigms.lm import load_stage_model

        path = run / "checkpoints" / checkpoint if checkpoint else run
        _, model, tok = load_stage_model(str(path), torch.device("cpu"))
        self.lm = getattr(model, "policy", model)  # PPO: the LM inside the policy-with-value-head
        self.encode, self.decode = tok.encode, tok.decode

    @torch.no_grad()
    def sample(self, prompts: list[str], n: int, seed: int, new: int = 64, batch: int = 512) -> list[list[list[int]]]:
        """n completions (token ids) of each prompt, temperature 1, no stop: exactly ``new`` tokens."""
        from trainwell.engine.generate import generate

        g = torch.Generator().manual_seed(seed)
        ids = [self.encode(p) for p in prompts for _ in range(n)]
        out: list[list[int]] = []
        for s in range(0, len(ids), batch):
            out += generate(self.lm, ids[s:s + batch], max_new_tokens=new, temperature=1.0, generator=g).ids
        return [out[i * n:(i + 1) * n] for i in range(len(prompts))]

    @torch.no_grad()
    def logps(self, prompts: list[str], completions: list[list[int]], batch: int = 256) -> torch.Tensor:
        """(N,) summed log-probability of each completion after its prompt."""
        from trainwell.data.completions import pad_rows
        from trainwell.objectives.sequence import sequence_logps

        out = []
        for s in range(0, len(prompts), batch):
            p = [self.encode(x) for x in prompts[s:s + batch]]
            seqs = pad_rows([a + b for a, b in zip(p, completions[s:s + batch])], [len(a) for a in p], 0)
            out.append(sequence_logps(self.lm, seqs.ids, seqs.mask).float())
        return torch.cat(out)


class RewardModel:
    def __init__(self, run: Path):
        from trainwell.paradigms.rewards import load_reward_model

        self.score = load_reward_model(str(run), torch.device("cpu"))

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor(self.score(prompts, completions))


def gold(prompts: list[str], completions: list[str]) -> torch.Tensor:
    return torch.tensor([valid_fraction(p, c) for p, c in zip(prompts, completions)])


# --------------------------------------------------------------------------- pairs


def label_pairs(sft: Policy, prompts: list[str], per: int, seed: int, rng: random.Random, tau: float
                ) -> tuple[list[dict], dict]:
    """``per`` pairs of SFT samples for each prompt, labelled by Bradley-Terry from the gold reward (ties dropped)."""
    samples = sft.sample(prompts, 2 * per, seed=seed)
    pairs, ceiling, ties, gaps = [], [], 0, []
    for p, group in zip(prompts, samples):
        for k in range(per):
            a, b = sft.decode(group[2 * k]), sft.decode(group[2 * k + 1])
            ga, gb = valid_fraction(p, a), valid_fraction(p, b)
            if ga == gb:
                ties += 1
                continue
            prob = 1 / (1 + math.exp(-(ga - gb) / tau))  # P(a preferred)
            a_wins = rng.random() < prob
            chosen, rejected = (a, b) if a_wins else (b, a)
            pairs.append({"prompt": p, "chosen": chosen, "rejected": rejected,
                          "gold_chosen": max(ga, gb) if a_wins == (ga > gb) else min(ga, gb)})
            ceiling.append(1 / (1 + math.exp(-abs(ga - gb) / tau)))
            gaps.append(abs(ga - gb))
    info = {"pairs": len(pairs), "ties_dropped": ties, "ceiling": sum(ceiling) / len(ceiling),
            "mean_gap": sum(gaps) / len(gaps),
            "label_agrees_with_gold": sum((r["gold_chosen"] >= valid_fraction(r["prompt"], r["rejected"]))
                                          for r in pairs) / len(pairs)}
    return pairs, info


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_pairs(sft: Policy, work: Path, tau: float, train_prompts: int, eval_pairs_per_prompt: int, seed: int) -> dict:
    """Preference pairs sampled from the SFT policy, labelled by Bradley-Terry from the gold reward."""
    out = work / "pairs.json"
    if out.is_file():
        return json.loads(out.read_text())
    train_rows, held_rows = stdlib_rows("sft", prompt_chars=64, completion_chars=64, eval_fraction=0.05)
    rng = random.Random(seed)
    info: dict = {"tau": tau}
    for split, rows, per in (("train", train_rows[:train_prompts], 1), ("eval", held_rows, eval_pairs_per_prompt)):
        pairs, info[split] = label_pairs(sft, [r["prompt"] for r in rows], per, seed + (split == "eval"), rng, tau)
        write_rows(work / f"pairs_{split}.jsonl", pairs)
    out.write_text(json.dumps(info, indent=1))
    return info


def many_pairs(sft: Policy, work: Path, tau: float, per: int, seed: int) -> Path:
    """``per`` labelled pairs of SFT samples for every training prompt (the offline control with as many labels
    as online DPO uses): WORK/pairs_many_train.jsonl, its counts in WORK/pairs_many.json."""
    path = work / "pairs_many_train.jsonl"
    if not path.is_file():
        train_rows, _ = stdlib_rows("sft", prompt_chars=64, completion_chars=64, eval_fraction=0.05)
        pairs, info = label_pairs(sft, [r["prompt"] for r in train_rows], per, seed + 7, random.Random(seed + 7), tau)
        write_rows(path, pairs)
        (work / "pairs_many.json").write_text(json.dumps({"per_prompt": per, **info}, indent=1))
    return path


# --------------------------------------------------------------------------- evaluation


def score_policy(pol: Policy, sft: Policy, rm: RewardModel, prompts: list[str], n: int, seed: int) -> dict:
    samples = pol.sample(prompts, n, seed)
    flat_p = [p for p in prompts for _ in range(n)]
    flat_c = [c for group in samples for c in group]
    texts = [pol.decode(c) for c in flat_c]
    kl = pol.logps(flat_p, flat_c) - sft.logps(flat_p, flat_c)
    return {"gold": float(gold(flat_p, texts).mean()), "proxy": float(rm(flat_p, texts).mean()),
            "kl": float(kl.mean()), "kl_se": float(kl.std() / math.sqrt(len(kl))), "comments": comment_share(texts)}


def comment_share(texts: list[str]) -> float:
    """Share of the completions' non-blank lines that are comments: a comment always parses, so a policy
    that writes comments instead of code earns the gold reward without writing code (it happens)."""
    lines = [line.strip() for t in texts for line in t.splitlines() if line.strip()]
    return sum(line.startswith("#") for line in lines) / max(1, len(lines))


def best_of_n(sft: Policy, rm: RewardModel, prompts: list[str], n_max: int, seed: int, keep: Path) -> list[dict]:
    """Best-of-n for n = 1, 2, 4 ... n_max from one draw of n_max completions per prompt (disjoint groups);
    the draw's (prompts, n_max) gold and proxy scores are saved to ``keep`` (for :func:`optimum`)."""
    samples = sft.sample(prompts, n_max, seed)
    flat_p = [p for p in prompts for _ in range(n_max)]
    texts = [sft.decode(c) for group in samples for c in group]
    g = gold(flat_p, texts).view(len(prompts), n_max)
    r = rm(flat_p, texts).view(len(prompts), n_max)
    rows = []
    n = 1
    while n <= n_max:
        gr, rr = g.view(len(prompts), n_max // n, n), r.view(len(prompts), n_max // n, n)
        pick = rr.argmax(-1, keepdim=True)
        rows.append({"n": n, "kl": math.log(n) - (n - 1) / n, "gold": float(gr.gather(-1, pick).mean()),
                     "proxy": float(rr.gather(-1, pick).mean()), "gold_oracle": float(gr.max(-1).values.mean())})
        n *= 2
    torch.save({"gold": g, "proxy": r}, keep)
    return rows


def optimum(scores: dict[str, torch.Tensor], by: str) -> list[dict]:
    """The KL-regularised optimum pi* ~ pi_sft exp(reward / beta) over a range of beta, estimated on the
    best-of-n draw: per prompt, the n SFT samples reweighted by softmax(reward / beta) (self-normalised
    importance weights). pi* maximises E[reward] - beta KL, so for the reward it tilts by (``by``: gold or
    proxy) no policy gets more of it at the same KL: with ``by="gold"`` this is the frontier every method
    could at best reach. The estimate is confined to the n samples: its KL cannot exceed log n."""
    g, r = scores["gold"].double(), scores["proxy"].double()
    tilt = g if by == "gold" else r
    n = g.shape[1]
    rows = []
    for beta in (1.0, 0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01):
        w = torch.softmax(tilt / beta, dim=1)
        kl = (w * torch.log(n * w).nan_to_num(neginf=0.0)).sum(1)  # 0 log 0 = 0
        rows.append({"beta": beta, "kl": float(kl.mean()), "gold": float((w * g).sum(1).mean()),
                     "proxy": float((w * r).sum(1).mean())})
    return rows


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    bon = results["bon"]
    a.plot([r["kl"] for r in bon], [r["gold"] for r in bon], "k--o", ms=3, label=LABELS["bon"])
    a.plot([r["kl"] for r in bon], [r["gold_oracle"] for r in bon], ":", color="grey", label=LABELS["bon_gold"])
    for by, style in (("gold", "-"), ("proxy", "-.")):
        opt = results.get("optimum", {}).get(by)
        if opt:
            a.plot([r["kl"] for r in opt], [r["gold"] for r in opt], style, color="grey", lw=2, alpha=0.5,
                   label=LABELS[f"optimum_{by}"])
    for r in bon:
        if r["n"] in (4, 16, 64):
            a.annotate(f"n={r['n']}", (r["kl"], r["gold"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    for m in METHODS:
        pts = results.get(m)
        if pts:
            a.plot([p["kl"] for p in pts], [p["gold"] for p in pts], "-o", ms=3, label=LABELS[m])
    a.axhline(results["sft"]["gold"], color="k", lw=0.6)
    a.set_xlabel("KL(pi || pi_sft), nats per completion")
    a.set_ylabel("gold reward (share of the completion that parses)")
    a.set_title("gold reward vs KL to the SFT policy (held-out prompts)")
    far = [m for m in METHODS if results.get(m) and max(p["kl"] for p in results[m]) > 20]
    a.set_xlim(-0.2, 20)  # the low-KL end is where the methods differ; runs beyond KL 20 leave the frame
    if far:
        a.text(19.7, 0.97, "beyond KL 20: " + ", ".join(LABELS[m] for m in far), ha="right", fontsize=8)
    a.legend(fontsize=7, loc="lower right")
    b2 = b.twinx()
    # against training steps: without a penalty the KL does not grow monotonically, so a curve over KL folds back
    for m, style in (("ppo_nokl", "-"), ("ppo", "--"), ("ppo_kl02", ":"), ("grpo_rm", "-.")):
        pts = results.get(m)
        if not pts:
            continue
        steps = [p["step"] for p in pts]
        b.plot(steps, [p["gold"] for p in pts], style, color="C0", marker="o", ms=3, label=f"gold, {LABELS[m]}")
        b2.plot(steps, [p["proxy"] for p in pts], style, color="C3", marker="s", ms=3,
                label=f"proxy (RM), {LABELS[m]}")
        far_kl = pts[-1]["kl"]
        b.annotate(f"KL {far_kl:.0f}", (steps[-1], pts[-1]["gold"]), textcoords="offset points", xytext=(-30, 6),
                   fontsize=8, color="C0")
    b.set_xlabel("training step")
    b.set_ylabel("gold reward", color="C0")
    b2.set_ylabel("proxy reward (reward model score)", color="C3")
    b.set_title("over-optimisation: optimising the reward model")
    lines = b.get_legend_handles_labels()[0] + b2.get_legend_handles_labels()[0]
    b.legend(lines, [x.get_label() for x in lines], fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="runs/bench-preferences")
    ap.add_argument("--tau", type=float, default=0.1, help="Bradley-Terry temperature of the labels")
    ap.add_argument("--train-prompts", type=int, default=4000)
    ap.add_argument("--eval-pairs", type=int, default=4, help="held-out pairs per held-out prompt")
    ap.add_argument("--eval-samples", type=int, default=2, help="completions per held-out prompt when scoring")
    ap.add_argument("--bon", type=int, default=64, help="largest n of best-of-n (a power of 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--size", choices=("default", "small"), default="default",
                    help="default: the recipes' GPT (4 layers x 128); small: 2 layers x 64 (an eighth of the compute)")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="steps of the `default` pretraining (0 = the "
                    "recipe's 650)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch's default)")
    ap.add_argument("--plot", default=str(ROOT / "bench" / "preferences.png"), help="where the figure goes")
    ap.add_argument("--quick", action="store_true", help="a 2 x 32 model and a tenth of the steps: checks the "
                    "pipeline in minutes; its numbers mean nothing")
    args = ap.parse_args()
    quick = {"model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32} if args.quick else {}
    if args.size == "small" and not args.quick:
        quick = {"model.n_layer": 2, "model.n_head": 4, "model.n_embd": 64}
    if args.quick:
        args.train_prompts, args.bon = min(args.train_prompts, 400), min(args.bon, 8)
        for _, values in METHODS.values():
            values["train.steps"] = max(4, int(values["train.steps"]) // 10)
            values["checkpoint.every"] = max(2, int(values["checkpoint.every"]) // 10)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    THREADS["train.threads"] = args.threads
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    t0 = time.perf_counter()

    short = {"train.steps": 60, "eval.every": 30} if args.quick else {}
    steps = {"train.steps": args.pretrain_steps} if args.pretrain_steps else {}
    pre = train_stage(work, "default", "default", {"log.progress": "lines", **quick, **steps, **short})
    sft_run = train_stage(work, "sft", "code_sft", {"train.init_from": str(pre), "log.progress": "lines", **quick,
                                                    **short})
    sft = Policy(sft_run)
    info = make_pairs(sft, work, args.tau, args.train_prompts, args.eval_pairs, args.seed)
    print(f"pairs: {json.dumps(info)}", flush=True)
    data = {"data.path": str(work / "pairs_train.jsonl"), "data.eval_path": str(work / "pairs_eval.jsonl")}
    rm_run = train_stage(work, "rm", "code_reward", {"train.init_from": str(sft_run), **data, "eval.batches": 100,
                                                     "log.progress": "lines", **quick, **short})
    rm_summary = json.loads((rm_run / "summary.json").read_text())
    rm = RewardModel(rm_run)
    _, held = stdlib_rows("sft", prompt_chars=64, completion_chars=64, eval_fraction=0.05)
    prompts = [r["prompt"] for r in held][:40 if args.quick else None]

    results_file = work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if "sft" not in results:
        results["sft"] = score_policy(sft, sft, rm, prompts, args.eval_samples, seed=1)
    bon_scores = work / "bon_scores.pt"
    if "bon" not in results:
        results["bon"] = best_of_n(sft, rm, prompts, args.bon, seed=2, keep=bon_scores)
    if "optimum" not in results and bon_scores.is_file():
        scores = torch.load(bon_scores)
        results["optimum"] = {"gold": optimum(scores, "gold"), "proxy": optimum(scores, "proxy")}
    results_file.write_text(json.dumps(results, indent=1))
    for m in [x for x in args.methods.split(",") if x]:
        recipe, values = METHODS[m]
        extra = {"train.init_from": str(sft_run), "checkpoint.keep": 1000, "checkpoint.keep_best": False,
                 "log.progress": "lines", "log.plots": False}
        if recipe == "code_dpo":  # offline: the labelled pairs
            extra.update(data)
            if values.get("data.path") == "many":
                values = {**values, "data.path": str(many_pairs(sft, work, args.tau, 4, args.seed))}
        elif "objective.reward_model" not in values:
            extra["objective.reward_model"] = str(rm_run)
        run = train_stage(work, m, recipe, {**extra, **values, **quick})
        if m in results:
            continue
        points = [dict(step=0, **results["sft"])]
        for ck in sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
            pol = Policy(run, ck.name)
            points.append(dict(step=int(ck.name.split("-")[1]), **score_policy(pol, sft, rm, prompts,
                                                                              args.eval_samples, seed=1)))
            print(f"[{m}] {points[-1]}", flush=True)
        results[m] = points
        results_file.write_text(json.dumps(results, indent=1))

    plot(results, work / "preferences.png" if args.quick else Path(args.plot))
    report(results, info, rm_summary, time.perf_counter() - t0)


def report(results: dict, info: dict, rm_summary: dict, seconds: float) -> None:
    sft = results["sft"]
    bon = {r["n"]: r for r in results["bon"]}
    b16 = bon.get(16)
    print(f"\nreward model: held-out accuracy {rm_summary['val_accuracy']:.3f} on {info['eval']['pairs']} pairs; "
          f"ceiling (Bradley-Terry labels, tau {info['tau']}) {info['eval']['ceiling']:.3f}; "
          f"labels that agree with the gold order {info['eval']['label_agrees_with_gold']:.3f}")
    print(f"SFT policy: gold {sft['gold']:.3f}, proxy {sft['proxy']:.3f}")
    print("\n| best-of-n | KL (nats) | gold | proxy | gold, oracle pick |\n|---|---|---|---|---|")
    for r in results["bon"]:
        print(f"| {r['n']} | {r['kl']:.2f} | {r['gold']:.3f} | {r['proxy']:.3f} | {r['gold_oracle']:.3f} |")
    for by in ("gold", "proxy"):
        opt = results.get("optimum", {}).get(by)
        if opt:
            print(f"\n{LABELS['optimum_' + by]}: pi_sft tilted by exp({by} / beta), estimated on the best-of-"
                  f"{results['bon'][-1]['n']} samples\n| beta | KL (nats) | gold | proxy |\n|---|---|---|---|")
            for r in opt:
                print(f"| {r['beta']} | {r['kl']:.2f} | {r['gold']:.3f} | {r['proxy']:.3f} |")
    print("\n| method | best gold at KL <= 5 (KL, step) | beats SFT at KL <= 5 | first reaches best-of-16's gold "
          "(KL, step) | last checkpoint: gold / proxy / KL | comment lines, last |\n|---|---|---|---|---|---|")
    for m in METHODS:
        pts = results.get(m)
        if not pts:
            continue
        within = [p for p in pts[1:] if p["kl"] <= 5]
        best = max(within, key=lambda p: p["gold"]) if within else None
        reach = next((p for p in pts[1:] if b16 and p["gold"] >= b16["gold"]), None)
        last = pts[-1]
        print(f"| {LABELS[m]} | " + (f"{best['gold']:.3f} ({best['kl']:.2f}, {best['step']})" if best else "-")
              + f" | {'yes' if best and best['gold'] > sft['gold'] else 'no'} | "
              + (f"{reach['gold']:.3f} ({reach['kl']:.2f}, {reach['step']})" if reach else "never")
              + f" | {last['gold']:.3f} / {last['proxy']:.3f} / {last['kl']:.2f} | "
              + (f"{last['comments']:.2f} |" if "comments" in last else "- |"))
    if b16:
        print(f"\nbest-of-16: gold {b16['gold']:.3f} at KL {b16['kl']:.2f}")
    print(f"\ntotal {seconds / 60:.1f} min; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"{os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
