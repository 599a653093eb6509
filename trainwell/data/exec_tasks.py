"""A code task family a small character model can learn on a CPU: one-line functions specified by a
docstring with one example, checked by hidden input/output pairs in the sandbox.

    def kilo(x):
        \"\"\"x plus 3: kilo(2) == 5\"\"\"
        return x + 3

A task is a template (the operation, e.g. ``x + C``), a constant C and a function name (a word that
says nothing about the operation). Four splits, so generalisation can be measured apart from recall:

    train               train templates, SFT constants (1-19 but the RL and held-out ones), train
                        names: the tasks with a reference solution (SFT trains on them)
    rl                  train templates, RL constants (6, 9, 15, 18), train names: tasks with tests
                        but no solution shown, the prompts RL learns on (RL on the SFT tasks
                        themselves has nothing to learn: a model fitted to their solutions passes them all)
    heldout_instances   train templates, held-out constants (4, 7, 11, 12) and held-out names
    heldout_templates   templates never trained on (compositions of trained ones), any constant

Every digit of a held-out or RL constant is written in some SFT solution (4 in 14, 7 in 17), so
copying the constant from the docstring can generalise; the single digits 4, 6, 7 and 9 are never a
whole SFT constant.

Each row is a task in the formats of ``trainwell execute`` (task_id, prompt, entry_point, inputs,
outputs, canonical_solution; visible_inputs/visible_outputs: the docstring's example, the feedback of
multi-turn episodes) and of the preference stages (prompt; completion = the reference
solution for SFT; every column is handed to the reward functions for GRPO/PPO). The hidden inputs are
never the docstring's example. ``python -m trainwell.data.exec_tasks DIR`` writes the three as JSONL.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any, Callable

# (id, argument, docstring text with {c}, body with {c}, the function itself)
Template = tuple[str, str, str, str, Callable[[Any, int], Any]]
TRAIN_TEMPLATES: list[Template] = [
    ("add", "x", "x plus {c}", "return x + {c}", lambda x, c: x + c),
    ("sub", "x", "x minus {c}", "return x - {c}", lambda x, c: x - c),
    ("mul", "x", "x times {c}", "return x * {c}", lambda x, c: x * c),
    ("mod", "x", "x modulo {c}", "return x % {c}", lambda x, c: x % c),
    ("max", "x", "the larger of x and {c}", "return max(x, {c})", lambda x, c: max(x, c)),
    ("min", "x", "the smaller of x and {c}", "return min(x, {c})", lambda x, c: min(x, c)),
    ("ladd", "xs", "each of xs plus {c}", "return [v + {c} for v in xs]", lambda xs, c: [v + c for v in xs]),
    ("lgt", "xs", "the items of xs above {c}", "return [v for v in xs if v > {c}]", lambda xs, c: [v for v in xs if v > c]),
    ("cgt", "xs", "how many of xs are above {c}", "return sum(1 for v in xs if v > {c})",
     lambda xs, c: sum(1 for v in xs if v > c)),
]
HELDOUT_TEMPLATES: list[Template] = [
    ("lmul", "xs", "each of xs times {c}", "return [v * {c} for v in xs]", lambda xs, c: [v * c for v in xs]),
    ("llt", "xs", "the items of xs below {c}", "return [v for v in xs if v < {c}]", lambda xs, c: [v for v in xs if v < c]),
    ("clt", "xs", "how many of xs are below {c}", "return sum(1 for v in xs if v < {c})",
     lambda xs, c: sum(1 for v in xs if v < c)),
]
HELDOUT_CONSTANTS = [4, 7, 11, 12]
RL_CONSTANTS = [6, 9, 15, 18]
SFT_CONSTANTS = [c for c in range(1, 20) if c not in HELDOUT_CONSTANTS + RL_CONSTANTS]
TRAIN_CONSTANTS = SFT_CONSTANTS + RL_CONSTANTS
NAMES = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune ember fern "
         "grove heath iris jade kelp lotus moss nova opal pine quartz reed sage thorn umber vale willow yew "
         "zinc acorn birch clover daisy elm flint garnet hazel ivy juniper").split()
HELDOUT_NAMES = set(NAMES[::5])  # every fifth word: never a name in training
HIDDEN_TESTS = 5


def draw_input(arg: str, rng: random.Random) -> Any:
    if arg == "x":
        return rng.randint(-20, 40)
    return [rng.randint(-10, 20) for _ in range(rng.randint(0, 5))]


def task(t: Template, c: int, name: str, rng: random.Random, split: str, n: int) -> dict[str, Any]:
    tid, arg, doc, body, fn = t
    example = draw_input(arg, rng)
    prompt = f'def {name}({arg}):\n    """{doc.format(c=c)}: {name}({example!r}) == {fn(example, c)!r}"""\n'
    inputs: list[list[Any]] = []
    while len(inputs) < HIDDEN_TESTS:
        x = draw_input(arg, rng)
        if x != example and [x] not in inputs:
            inputs.append([x])
    return {"task_id": f"{split}/{n}/{tid}/{c}/{name}", "prompt": prompt, "entry_point": name,
            "inputs": inputs, "outputs": [fn(a[0], c) for a in inputs],
            "visible_inputs": [[example]], "visible_outputs": [fn(example, c)],  # the docstring's example
            "canonical_solution": f"    {body.format(c=c)}\n", "completion": f"    {body.format(c=c)}\n\n",
            "template": tid, "split": split}


def family(train: int = 2000, rl: int = 1000, heldout: int = 100, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The four splits (deterministic for a seed)."""
    rng = random.Random(seed)
    train_names = [n for n in NAMES if n not in HELDOUT_NAMES]
    held_names = sorted(HELDOUT_NAMES)
    out: dict[str, list[dict[str, Any]]] = {"train": [], "rl": [], "heldout_instances": [], "heldout_templates": []}
    for split, n, constants in (("train", train, SFT_CONSTANTS), ("rl", rl, RL_CONSTANTS)):
        for i in range(n):
            out[split].append(task(rng.choice(TRAIN_TEMPLATES), rng.choice(constants), rng.choice(train_names),
                                   rng, split, i))
    for i in range(heldout):
        out["heldout_instances"].append(task(rng.choice(TRAIN_TEMPLATES), rng.choice(HELDOUT_CONSTANTS),
                                             rng.choice(held_names), rng, "heldout_instances", i))
        out["heldout_templates"].append(task(rng.choice(HELDOUT_TEMPLATES), rng.choice(TRAIN_CONSTANTS + HELDOUT_CONSTANTS),
                                             rng.choice(NAMES), rng, "heldout_templates", i))
    return out


def exec_rows(split: str = "train", eval_rows: int = 200, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the rows of ``split``: train for SFT, rl for RL; held-out rows: the held-out instances and
    templates, alternating)."""
    f = family(heldout=max(1, eval_rows // 2), seed=seed)
    held = [r for pair in zip(f["heldout_instances"], f["heldout_templates"]) for r in pair]
    return f[split], held


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m trainwell.data.exec_tasks OUT_DIR")
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in family().items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{out / split}.jsonl: {len(rows)} tasks")


if __name__ == "__main__":
    main(sys.argv[1:])
