"""Reinforcement learning: environments, rollout sources, advantage estimation."""
