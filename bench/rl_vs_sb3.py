"""Issue 5 target: PPO on CartPole-v1 reaches a deterministic evaluation return of 475 in fewer
environment steps and less training time than Stable-Baselines3 (the issue asks for the median
over 3 seeds; this runs 5 by default because single seeds vary from 5k to 35k steps).

Both sides run in this invocation, each seed as its own process, evaluated with 10
deterministic episodes (seeds 100000..100009) on a separate environment at the same env-step
points, stopping at the first evaluation >= 475. "Training time" excludes evaluation on both
sides (trainwell's also excludes checkpoint writes and logging; its wall time is printed too).

  --algo ppo (default, the issue's target)
    SB3        PPO with the RL-Zoo CartPole-v1 settings (8 envs, n_steps 32, batch 256, 20 epochs,
               gamma 0.98, GAE 0.8, lr lin_1e-3, clip lin_0.2, ent 0), evaluated every 5,000 steps.
    trainwell  `trainwell train cartpole_ppo` (evaluates every 5,000 env steps, stops when solved).
  --algo dqn
    SB3        DQN with the RL-Zoo CartPole-v1 settings ([256, 256], lr 2.3e-3, batch 64, learning
               starts 1,000, train_freq 256, 128 gradient steps, target update 10, epsilon 1 -> 0.04
               over 16 % of 50k steps), evaluated at 3,560 + k * 2,560 env steps.
    trainwell  `trainwell train cartpole_dqn`: the same settings and evaluation points, and the
               same target schedule in effect (counted in env steps: one copy after each
               collection), but shorter bursts: 32 updates after every 64 env steps (RL-Zoo's
               ratio; see bench/RESULTS.md). Double DQN where SB3's is plain DQN.

SB3 is installed into its own virtual environment (--system-site-packages, so it uses this
machine's torch); it is not a trainwell dependency.

    python bench/rl_vs_sb3.py [--algo ppo|dqn] [--seeds 5] [--first-seed 0] [--venv /tmp/sb3-venv]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import env_note, timed_process, trainwell_cmd  # noqa: E402

SB3_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import gymnasium as gym, numpy as np, torch
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    torch.set_num_threads(1)
    algo, seed = sys.argv[1], int(sys.argv[2])
    first, every = (5000, 5000) if algo == "ppo" else (3560, 2560)  # trainwell's evaluation points

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_eval, self.eval_time, self.hit = first, 0.0, None
        def _on_step(self):
            if self.num_timesteps >= self.next_eval:
                t0 = time.perf_counter()
                env, rets = gym.make("CartPole-v1"), []
                for i in range(10):
                    obs, _ = env.reset(seed=100_000 + i); done, total = False, 0.0
                    while not done:
                        a, _ = self.model.predict(obs, deterministic=True)
                        obs, r, term, trunc, _ = env.step(a); total += r; done = term or trunc
                    rets.append(total)
                self.eval_time += time.perf_counter() - t0
                self.next_eval += every
                if np.mean(rets) >= 475:
                    self.hit = self.num_timesteps
                    return False
            return True

    if algo == "ppo":  # RL-Zoo hyperparameters for CartPole-v1
        env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
        model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8,
                    learning_rate=lambda progress: 1e-3 * progress, clip_range=lambda progress: 0.2 * progress,
                    ent_coef=0.0, seed=seed, device="cpu", verbose=0)
        budget = 100_000
    else:
        env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
        model = DQN("MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                    learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
                    gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
                    policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu", verbose=0)
        budget = 50_000
    cb = Eval()
    t0 = time.perf_counter()
    model.learn(total_timesteps=budget, callback=cb)
    total = time.perf_counter() - t0
    print(json.dumps({"env_steps": cb.hit, "train_seconds": total - cb.eval_time, "with_eval_seconds": total}))
""")


def ensure_sb3(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    probe = subprocess.run([str(py), "-c", "import stable_baselines3"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "stable-baselines3>=2.9,<3", "torch==2.13.0"],
                       check=True)
    return py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)  # solve steps vary 5k-35k by seed: 3 is too few
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (5: held out from tuning)")
    ap.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "trainwell-sb3-venv"))
    ap.add_argument("--algo", choices=("ppo", "dqn"), default="ppo",
                    help="ppo: recipe cartpole_ppo vs SB3 PPO (the issue's target); dqn: cartpole_dqn vs SB3 DQN")
    args = ap.parse_args()
    print(env_note())
    py = ensure_sb3(Path(args.venv))
    script = Path(tempfile.mkdtemp()) / "sb3_cartpole.py"
    script.write_text(SB3_SCRIPT)
    tmp = Path(tempfile.mkdtemp(prefix="bench-rl-"))
    sb3, ours = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        _, out = timed_process([str(py), str(script), args.algo, str(seed)])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        sb3.append(r)
        print(f"  SB3       seed {seed}: solved at {r['env_steps']} env steps, {r['train_seconds']:.1f} s training "
              f"({r['with_eval_seconds']:.1f} s with evaluation)", flush=True)
        run = tmp / f"tw-{seed}"
        timed_process(trainwell_cmd("train", f"cartpole_{args.algo}", "--run-dir", str(run), "--set", f"train.seed={seed}",
                                    "--set", "log.progress=off", "--set", "data.video=false"))
        s = json.loads((run / "summary.json").read_text())
        solved = s["val_return"] >= 475
        ours.append({"env_steps": s["env_steps"] if solved else None, "train_seconds": s["train_seconds"],
                     "with_eval_seconds": s["wall_seconds"]})
        print(f"  trainwell seed {seed}: {'solved' if solved else 'NOT solved'} at {s['env_steps']} env steps, "
              f"{s['train_seconds']:.1f} s training ({s['wall_seconds']:.1f} s run incl. evaluation)", flush=True)

    def med(rows, key):
        # a seed that never solved counts as infinitely slow, in env steps and in time
        vals = [r[key] if r["env_steps"] is not None else float("inf") for r in rows]
        return statistics.median(vals)

    for name, rows in (("SB3", sb3), ("trainwell", ours)):
        print(f"{name:10s} median: {med(rows, 'env_steps'):.0f} env steps, {med(rows, 'train_seconds'):.2f} s training")
    print(f"ratio trainwell/SB3: env steps {med(ours, 'env_steps') / med(sb3, 'env_steps'):.3f}, "
          f"training time {med(ours, 'train_seconds') / med(sb3, 'train_seconds'):.3f}  (target: both < 1)")


if __name__ == "__main__":
    main()
