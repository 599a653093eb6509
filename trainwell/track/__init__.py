"""Metric sinks (JSONL, TensorBoard, console progress), plots and run reports.

This package is imported by the CLI on every invocation (including ``--help`` and recipe
validation), so nothing here may import torch, matplotlib or tensorboard at module level.
Heavy dependencies are imported lazily inside the functions that need them:

- ``track.tensorboard``: torch.utils.tensorboard inside ``TensorBoardSink.__init__``
- ``track.plots``: matplotlib inside ``draw_plots``
- ``track.meta``: torch inside ``run_meta``

Import the submodules directly (``from trainwell.track.metrics import MetricsJSONL``); this
``__init__`` deliberately re-exports nothing so that importing it stays free.
"""
