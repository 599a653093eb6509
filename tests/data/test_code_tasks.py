"""The gold reward of the preference bench: how much of a completion parses after its prompt."""

from __future__ import annotations

import random

import pytest

from trainwell.data.code_tasks import code_valid, corrupt, pair_of, snippets, valid_fraction

PROMPT = "def f(x):\n    y = x + 1\n"


def test_valid_fraction_is_the_longest_parsing_cut():
    assert valid_fraction(PROMPT, "    return y\n") == 1.0
    done = "    return y\n"
    # the share of the non-blank characters: "return y" of "return y" + "z = ("
    assert valid_fraction(PROMPT, done + "    z = (\n") == pytest.approx(7 / 10)
    assert valid_fraction(PROMPT, "  return )") == 0.0  # the prompt alone parses, but a cut at 0 is worth 0
    assert valid_fraction(PROMPT, "") == 0.0
    # an indented prompt (a method) is judged as if dedented
    assert valid_fraction("    def g(self):\n        a = 1\n", "        return a\n") == 1.0
    assert code_valid([PROMPT, PROMPT], ["    return y", "    return (y"]) == [1.0, 0.0]


def test_comments_and_blank_lines_earn_nothing():
    """They parse whatever they say: a policy paid for them writes no code (GRPO did, bench/RESULTS.md)."""
    assert valid_fraction(PROMPT, "    # any text at all, it parses\n    # more\n") == 0.0
    assert valid_fraction(PROMPT, "\n\n\n    \n") == 0.0
    assert valid_fraction(PROMPT, "    return y  # done\n") == pytest.approx(7 / 12)  # "return y" of "return y#done"
    assert valid_fraction(PROMPT, "    # why\n    return y\n") == pytest.approx(7 / 11)
    # a '#' inside a string is not a comment
    assert valid_fraction(PROMPT, "    return '#'\n") == 1.0
    # a prompt that ends mid-line: the completion's comments are found on the shared line too
    assert valid_fraction("def f(x):\n    return x", " + 1  # plus one") == pytest.approx(2 / 10)
    # a comment of the prompt costs the completion nothing
    assert valid_fraction("def f(x):\n    # note\n", "    return x\n") == 1.0


def test_snippets_and_pairs_from_source():
    source = "class A:\n    def m(self, v):\n        w = v * 2\n        if w:\n            return w\n        return 0\n"
    rows = snippets(source, prompt_chars=64, completion_chars=40)
    assert rows == [{"prompt": "def m(self, v):\n    w = v * 2\n",
                     "completion": "    if w:\n        return w\n    return 0\n"}]
    pair = pair_of(rows[0], random.Random(0))
    assert pair is not None and pair["chosen"] == rows[0]["completion"]
    assert valid_fraction(pair["prompt"], pair["rejected"]) < valid_fraction(pair["prompt"], pair["chosen"])
    assert corrupt("abcdef", random.Random(1)) != "abcdef"
