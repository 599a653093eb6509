"""Measurements about a run that are not the run itself: live tensor memory op by op (tracker.py),
the memory this machine has free (available.py). The memory plan that uses them is
trainwell/engine/plan.py. Nothing here imports the engine or a paradigm."""
