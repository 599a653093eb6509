"""Learning from execution feedback: the task family, the `execution` reward, GRPO/PPO with it (tiny),
and the rollout source resuming exactly with rewards from the sandbox."""

from __future__ import annotations

import json

import pytest

import trainwell
from trainwell.data.exec_tasks import HELDOUT_CONSTANTS, HELDOUT_NAMES, HELDOUT_TEMPLATES, RL_CONSTANTS, SFT_CONSTANTS, family
from trainwell.paradigms.rewards import SHIPPED
from trainwell.sandbox.reward import execution, execution_passed, sandbox
from trainwell.sandbox.tasks import Task, run


def columns(rows):
    return {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}


def test_task_family_splits_are_disjoint_and_its_references_pass():
    f = family(train=300, rl=100, heldout=40)
    held_templates = {t[0] for t in HELDOUT_TEMPLATES}
    constant = lambda r: int(r["task_id"].split("/")[3])  # noqa: E731  (task_id: split/n/template/C/name)
    for r in f["train"] + f["rl"]:
        assert r["entry_point"] not in HELDOUT_NAMES and r["template"] not in held_templates
        assert constant(r) not in HELDOUT_CONSTANTS
    assert {constant(r) for r in f["train"]} == set(SFT_CONSTANTS) and {constant(r) for r in f["rl"]} == set(RL_CONSTANTS)
    assert all(r["entry_point"] in HELDOUT_NAMES for r in f["heldout_instances"])
    assert {r["template"] for r in f["heldout_templates"]} <= held_templates
    rows = f["train"][:40] + f["rl"][:20] + f["heldout_instances"][:20] + f["heldout_templates"][:20]
    for r in rows:  # the docstring's example is never a hidden test
        example = r["prompt"].split(f"{r['entry_point']}(")[2].split(") ==")[0]
        assert [json.loads(example)] not in r["inputs"]
    tasks = [Task(r["task_id"], r["prompt"], r["entry_point"], inputs=r["inputs"], outputs=r["outputs"]) for r in rows]
    assert all(o.passed for o in run(sandbox(), [(t, r["canonical_solution"]) for t, r in zip(tasks, rows)]))


def test_execution_reward_is_shaped_like_coderl():
    assert SHIPPED["execution"] is execution
    r = family(train=1, heldout=1)["train"][0]
    rows = [r] * 5
    completions = [r["canonical_solution"], "    return None\n", "    return 1 / 0\n", "    return (\n", " \n"]
    # the last: the docstring alone is a valid function returning None - not a "wrong answer"
    assert execution([x["prompt"] for x in rows], completions, **columns(rows)) == [1.0, -0.3, -0.6, -1.0, -1.0]
    assert execution_passed([x["prompt"] for x in rows], completions, **columns(rows)) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_execution_reward_takes_human_eval_tests_too():
    prompt = "def inc(x):\n"
    test = "def check(candidate):\n    assert candidate(1) == 2\n"
    got = execution([prompt, prompt], ["    return x + 1\n", "    return x\n"], entry_point=["inc", "inc"],
                    test=[test, test])
    assert got == [1.0, -0.3]


@pytest.fixture(scope="module")
def exec_prompts(tmp_path_factory):
    """Prompt rows with hidden tests short enough for the tiny model's 32-token context."""
    rows = []
    for c in range(1, 9):
        for name in ("f", "g", "h"):
            rows.append({"prompt": f"def {name}(x):\n", "entry_point": name, "inputs": [[1], [2]],
                         "outputs": [1 + c, 2 + c], "visible_inputs": [[0]], "visible_outputs": [c]})
    path = tmp_path_factory.mktemp("rlef") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("recipe", ["code_exec_grpo", "code_exec_ppo"])
def test_rlef_recipes_run_tiny_with_the_sandbox_reward(recipe, tmp_path, pref, exec_prompts):
    stage = "grpo" if "grpo" in recipe else "ppo"
    sets = pref(stage, data__path=str(exec_prompts), data__eval_fraction=0.2, data__stop=["\n\n"],
                data__eval_rewards=["execution_passed"], train__steps=4, eval__every=4, checkpoint__every=4,
                log__every=2)
    res = trainwell.train(recipe, sets, run_dir=tmp_path / stage)
    logged = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = set().union(*map(set, logged))
    assert {"train/rewards/execution", "val/rewards/execution_passed"} <= keys, keys
    values = [r["train/rewards/execution"] for r in logged if "train/rewards/execution" in r]
    assert all(-1.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize("turns", [1, 2])
def test_rollouts_with_execution_rewards_resume_exactly(turns, pref, exec_prompts):
    from sources import assert_source_resumes_exactly

    from trainwell.config import load_config

    cfg = load_config("code_exec_grpo", pref("grpo", data__path=str(exec_prompts), data__eval_fraction=0.2,
                                             data__eval_rewards=[], data__turns=turns, data__max_new_tokens=6))
    last = assert_source_resumes_exactly(cfg, before=2, after=2)
    assert "adv" in last


def test_builtin_exec_tasks_are_loaded_for_sft_and_prompts():
    from trainwell.config import load_config
    from trainwell.data.completions import load_rows

    for recipe, split, n in (("code_exec_sft", "train", 2000), ("code_exec_grpo", "rl", 1000)):
        train, held, info = load_rows(load_config(recipe, []).data)
        assert info["builtin"] == "exec_tasks" and info["split"] == split and len(train) == n and len(held) == 200
        assert {r["split"] for r in train} == {split}
        assert {"prompt", "completion", "entry_point", "inputs", "outputs"} <= set(train[0])


def test_episodes_append_feedback_and_mask_it_out():
    """A scripted policy: a wrong first attempt, the visible test's feedback, a right second one."""
    import torch

    from trainwell.rl.turns import episodes
    from trainwell.sandbox.reward import execution_feedback

    encode = lambda text: [ord(ch) for ch in text]  # noqa: E731
    decode = lambda ids: "".join(map(chr, ids))  # noqa: E731
    script = {1: "    return x\n", 2: "    return x + 3\n"}
    seen = []

    def sample(policy, prompts, generator):
        seen.append([decode(p) for p in prompts])
        return [encode(script[len(seen)]) for _ in prompts], [True] * len(prompts)

    row = {"prompt": "def f(x):\n", "entry_point": "f", "inputs": [[5]], "outputs": [8],
           "visible_inputs": [[1]], "visible_outputs": [4]}

    def feedback(rows, texts):
        cols = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
        return execution_feedback([r["prompt"] for r in rows], texts, **cols)

    ep = episodes(sample, None, [encode(row["prompt"])], [row], torch.Generator(), decode=decode, encode=encode,
                  feedback=feedback, turns=3, context=200, budget=20)
    assert ep.turns == [2] and ep.last == ["    return x + 3\n"]  # the second attempt passed: no third
    assert seen[1] == ["def f(x):\n    return x\n# f(1) returned 1, expected 4\n"]
    text = decode(ep.ids[0])
    generated = "".join(ch for ch, m in zip(text, ep.masks[0]) if m)
    assert generated == "    return x\n    return x + 3\n"  # the feedback is not the policy's
    # no room for another attempt: the episode ends after the first
    seen.clear()
    ep = episodes(sample, None, [encode(row["prompt"])], [row], torch.Generator(), decode=decode, encode=encode,
                  feedback=feedback, turns=3, context=40, budget=20)
    assert ep.turns == [1] and len(seen) == 1


def test_multi_turn_grpo_runs_tiny(tmp_path, pref, exec_prompts):
    sets = pref("grpo", data__path=str(exec_prompts), data__eval_fraction=0.2, data__stop=["\n\n"],
                data__turns=2, data__max_new_tokens=6, data__eval_rewards=[], train__steps=2, eval__every=2,
                checkpoint__every=2, log__every=1)
    res = trainwell.train("code_exec_grpo", sets, run_dir=tmp_path / "mt")
    logged = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    turns = [r["train/turns/mean"] for r in logged if "train/turns/mean" in r]
    assert turns and all(1.0 <= t <= 2.0 for t in turns)
