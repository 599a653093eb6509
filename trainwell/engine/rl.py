"""Reinforcement learning as a Job: the rollout collector is the source, PPO the objective."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from trainwell.config.schema import Config
from trainwell.engine.job import Job
from trainwell.errors import ConfigError


def ppo_job(cfg: Config, device: torch.device) -> Job:
    import gymnasium as gym

    from trainwell.models.registry import build_model
    from trainwell.objectives.ppo import ppo_loss
    from trainwell.rl.rollout import PPORollouts, make_envs

    d, o = cfg.data, cfg.objective
    if o.name != "ppo" or cfg.model.name != "actor_critic":
        raise ConfigError("data.name = 'gym' trains with objective.name = 'ppo' and model.name = 'actor_critic'.")
    probe = make_envs(d.env_id, 1)
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    evaluate, finish = env_hooks(d.env_id, probe.envs[0].unwrapped, d.eval_episodes, d.eval_seed)
    probe.close()
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError(f"{d.env_id} has observations {obs_space}; the actor-critic MLP needs a flat Box.")
    continuous = isinstance(act_space, gym.spaces.Box)
    act_dim = act_space.shape[0] if continuous else int(act_space.n)
    model = build_model(cfg.model, obs_dim=obs_space.shape[0], act_dim=act_dim, continuous=continuous).to(device)
    source = PPORollouts(model, env_id=d.env_id, num_envs=d.num_envs, rollout_steps=d.rollout_steps,
                         gamma=d.gamma, lam=d.gae_lambda, update_epochs=d.update_epochs,
                         minibatch_size=d.minibatch_size, seed=cfg.train.seed)
    rollouts = max(1, d.total_env_steps // (d.num_envs * d.rollout_steps))

    def objective(m: torch.nn.Module, batch: dict[str, torch.Tensor]):
        return ppo_loss(m, batch, clip=o.clip, vf_coef=o.vf_coef, ent_coef=o.ent_coef,
                        clip_value=o.clip_value, norm_adv=o.norm_adv)

    return Job(model=model, source=source, objective=objective, eval_batches=[], units="samples",
               batches_per_epoch=source.updates_per_rollout(),
               total_steps=rollouts * source.updates_per_rollout(),
               evaluate=evaluate, train_metrics=source.episode_stats,
               finish=lambda m, run_dir: {"env_steps": source.env_steps(), **finish(m, run_dir)},
               facts={"parameters": sum(p.numel() for p in model.parameters()), "env_id": d.env_id,
                      "continuous_actions": continuous, "rollouts": rollouts})


def env_hooks(env_id: str, env: Any, episodes: int, seed: int) -> tuple[Callable[[torch.nn.Module], dict[str, float]],
                                                             Callable[[torch.nn.Module, Path], dict[str, Any]]]:
    """Evaluation and end-of-run report for ``env_id``: the mean deterministic return for any
    environment; for macro placement, held-out netlists against random and greedy placement."""
    from trainwell.rl import placement_report
    from trainwell.rl.placement import MacroPlacementEnv
    from trainwell.rl.rollout import evaluate_policy

    if isinstance(env, MacroPlacementEnv):  # any registered size

        cache: dict = {}  # baseline HPWL per held-out netlist: the same at every evaluation
        return (lambda m: placement_report.compare(m, env_id, episodes, seed, cache),
                lambda m, run_dir: placement_report.finish(m, run_dir, env_id, episodes, seed, cache))
    return lambda m: evaluate_policy(m, env_id, episodes, seed), lambda m, run_dir: {}
