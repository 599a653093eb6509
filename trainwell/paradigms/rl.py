"""Reinforcement learning as Jobs: a rollout collector (PPO) or a replay buffer (DQN) is the
source, the PPO / DQN losses are the objectives; the loop is the same one every paradigm uses."""

from __future__ import annotations

from typing import Any

import torch

from trainwell.config.schema import Config
from trainwell.engine.job import Job
from trainwell.errors import ConfigError


def probe_env(env_id: str) -> Any:
    """One environment built and closed, for its spaces (the observation space is a flat Box:
    make_env flattens others) and its type."""
    from trainwell.rl.envs import make_env

    env = make_env(env_id)
    env.close()
    return env


def finish_rl(d: Any, source: Any):
    """End-of-run extras: env steps, and a GIF of one deterministic evaluation episode."""
    def finish(model: torch.nn.Module, run_dir: Any) -> dict[str, Any]:
        from trainwell.rl.evaluate import write_gif

        out: dict[str, Any] = {"env_steps": source.env_steps()}
        if d.video:
            out.update(write_gif(model, d.env_id, d.eval_seed, run_dir / "episode.gif"))
        return out
    return finish


def placement_hooks(d: Any, env: Any, finish_base: Any, draw: bool) -> tuple[Any, Any] | None:
    """For a macro-placement env (any registered size): evaluation on held-out netlists against
    random and greedy placement, and at the end also placement.json and (``draw``: log.plots) placement.png.
    None otherwise."""
    from trainwell.rl import placement_report
    from trainwell.rl.placement import MacroPlacementEnv

    if not isinstance(env.unwrapped, MacroPlacementEnv):
        return None
    cache: dict = {}  # baseline HPWL per held-out netlist: the same at every evaluation

    def finish(model: torch.nn.Module, run_dir: Any) -> dict[str, Any]:
        return {**finish_base(model, run_dir),
                **placement_report.finish(model, run_dir, d.env_id, d.eval_episodes, d.eval_seed, cache, draw)}

    return lambda m: placement_report.compare(m, d.env_id, d.eval_episodes, d.eval_seed, cache), finish


def ppo_job(cfg: Config, device: torch.device) -> Job:
    import gymnasium as gym

    from trainwell.models.registry import build_model
    from trainwell.objectives.ppo import ppo_loss
    from trainwell.rl.evaluate import evaluate_policy
    from trainwell.rl.rollout import PPORollouts

    d, o = cfg.data, cfg.objective
    if o.name != "ppo" or cfg.model.name != "actor_critic":
        raise ConfigError("data.name = 'gym' trains with objective.name = 'ppo' and model.name = 'actor_critic'.")
    env = probe_env(d.env_id)
    obs_space, act_space = env.observation_space, env.action_space
    continuous = isinstance(act_space, gym.spaces.Box)
    act_dim = act_space.shape[0] if continuous else int(act_space.n)
    model = build_model(cfg.model, obs_dim=obs_space.shape[0], act_dim=act_dim, continuous=continuous).to(device)
    source = PPORollouts(model, env_id=d.env_id, num_envs=d.num_envs, rollout_steps=d.rollout_steps,
                         gamma=d.gamma, lam=d.gae_lambda, update_epochs=d.update_epochs,
                         minibatch_size=d.minibatch_size, seed=cfg.train.seed, normalize_reward=d.normalize_reward)
    rollouts = max(1, d.total_env_steps // (d.num_envs * d.rollout_steps))

    def objective(m: torch.nn.Module, batch: dict[str, torch.Tensor]):
        return ppo_loss(m, batch, clip=o.clip, vf_coef=o.vf_coef, ent_coef=o.ent_coef,
                        clip_value=o.clip_value, norm_adv=o.norm_adv)

    base_finish = finish_rl(d, source)
    hooks = placement_hooks(d, env, base_finish, cfg.log.plots)
    evaluate, finish = hooks if hooks else (lambda m: evaluate_policy(m, d.env_id, d.eval_episodes, d.eval_seed),
                                            base_finish)
    return Job(model=model, source=source, objective=objective, eval_batches=[], units="samples",
               batches_per_epoch=source.updates_per_rollout(),
               total_steps=rollouts * source.updates_per_rollout(),
               evaluate=evaluate, train_metrics=source.episode_stats, finish=finish,
               best_metric="val/return", best_mode="max",
               facts={"parameters": sum(p.numel() for p in model.parameters()), "env_id": d.env_id,
                      "continuous_actions": continuous, "rollouts": rollouts})


def dqn_job(cfg: Config, device: torch.device) -> Job:
    import gymnasium as gym

    from trainwell.models.registry import build_model
    from trainwell.objectives.dqn import dqn_loss
    from trainwell.rl.evaluate import evaluate_policy
    from trainwell.rl.replay import ReplaySource

    d, o = cfg.data, cfg.objective
    if o.name != "dqn" or cfg.model.name != "mlp":
        raise ConfigError("data.name = 'replay' trains with objective.name = 'dqn' and model.name = 'mlp' "
                          "(a Q-network: observation in, one value per action out).")
    env = probe_env(d.env_id)
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(act_space, gym.spaces.Discrete):
        raise ConfigError(f"DQN needs discrete actions but {d.env_id} has {act_space}; use the PPO recipe "
                          f"(data.name = 'gym', objective.name = 'ppo') for continuous actions.")
    model = build_model(cfg.model, feature_shape=tuple(obs_space.shape), out_features=int(act_space.n)).to(device)
    source = ReplaySource(model, env_id=d.env_id, num_envs=d.num_envs, buffer_size=d.buffer_size,
                          learning_starts=d.learning_starts, collect_steps=d.collect_steps,
                          updates_per_collect=d.updates_per_collect, batch_size=cfg.train.batch_size,
                          gamma=d.gamma, target_every_env_steps=d.target_every_env_steps, double_q=d.double_q,
                          epsilon=(d.epsilon_start, d.epsilon_end, int(d.epsilon_fraction * d.total_env_steps)),
                          seed=cfg.train.seed)
    collects = max(1, (d.total_env_steps - d.learning_starts) // d.collect_steps)
    return Job(model=model, source=source, objective=lambda m, b: dqn_loss(m, b, loss=o.loss), eval_batches=[],
               units="samples", batches_per_epoch=d.updates_per_collect,
               total_steps=collects * d.updates_per_collect,
               evaluate=lambda m: evaluate_policy(m, d.env_id, d.eval_episodes, d.eval_seed),
               train_metrics=source.episode_stats, finish=finish_rl(d, source),
               best_metric="val/return", best_mode="max",
               facts={"parameters": sum(p.numel() for p in model.parameters()), "env_id": d.env_id,
                      "collections": collects})
