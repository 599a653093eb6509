"""trainwell's OpenMP default (trainwell/threads.py): set before torch loads, never over the user's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from trainwell import threads


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not loaded torch yet, with no OpenMP settings of its own."""
    for key in (*threads.OWN_KEYS, threads.MARK, "TRAINWELL_OMP_DEFAULTS"):
        monkeypatch.setenv(key, "")  # recorded, so whatever apply_defaults writes is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setattr(threads, "_applied", {})
    monkeypatch.setattr(threads, "_late", False)
    monkeypatch.setattr(threads, "sys", SimpleNamespace(modules={}))
    return monkeypatch


def test_default_spin_count_is_set_and_recorded(fresh):
    import os

    threads.apply_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPINCOUNT
    assert threads.applied() == f"GOMP_SPINCOUNT={threads.SPINCOUNT} (trainwell's default)"
    # a child process (torchrun's ranks) inherits it and knows it is trainwell's, not the user's
    fresh.setattr(threads, "_applied", {})
    threads.apply_defaults()
    assert "trainwell's default" in threads.applied()


@pytest.mark.parametrize("key, value", [("GOMP_SPINCOUNT", "5"), ("OMP_WAIT_POLICY", "PASSIVE")])
def test_the_users_setting_is_left_alone(fresh, key, value):
    import os

    fresh.setenv(key, value)
    threads.apply_defaults()
    assert os.environ.get("GOMP_SPINCOUNT") == (value if key == "GOMP_SPINCOUNT" else None)
    assert threads.applied() == f"{key}={value} (set by the user)"


def test_too_late_once_torch_is_loaded_and_off_on_request(fresh):
    import os

    fresh.setattr(threads, "sys", SimpleNamespace(modules={"torch": object()}))
    threads.apply_defaults()
    assert "GOMP_SPINCOUNT" not in os.environ and "imported before trainwell" in threads.applied()
    fresh.setattr(threads, "_late", False)
    fresh.setattr(threads, "sys", SimpleNamespace(modules={}))
    fresh.setenv("TRAINWELL_OMP_DEFAULTS", "0")
    threads.apply_defaults()
    assert "GOMP_SPINCOUNT" not in os.environ and "TRAINWELL_OMP_DEFAULTS=0" in threads.applied()
