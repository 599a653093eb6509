"""Reinforcement learning: environments, rollout sources, advantage estimation.

Importing this package registers trainwell's own gymnasium environments, so ``data.env_id`` (and
``gymnasium.make``) can name them.
"""

import gymnasium as gym

PLACEMENT_ENV = "trainwell/MacroPlacement-v0"  # 10 x 10 grid, 8 macros up to 3 x 3, 10 nets of 2-4 pins

if PLACEMENT_ENV not in gym.registry:
    gym.register(id=PLACEMENT_ENV, entry_point="trainwell.rl.placement:MacroPlacementEnv",
                 kwargs=dict(grid=10, macros=8, max_size=3, nets=10, max_pins=4))
