import subprocess
import sys

import pytest

COMMANDS = ["train", "plan", "recipes", "check", "report", "compare", "export", "generate", "eval", "execute"]


@pytest.fixture
def cli():
    """Fresh interpreters (not tests/forked.py): these are the CLI's own smoke tests, start-up included."""
    def run(*args: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run([sys.executable, "-m", "trainwell", *args], capture_output=True, text=True, timeout=120)

    return run


def test_help_lists_commands(cli):
    out = cli("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_each_command_explains_itself(cli, cmd):
    out = cli(cmd, "--help")
    assert out.returncode == 0 and "Usage" in out.stdout and len(out.stdout) > 200


def test_recipes_lists_descriptions(cli):
    out = cli("recipes")
    assert out.returncode == 0
    assert "default " in out.stdout and "standard library" in out.stdout


def test_help_and_validation_do_not_import_torch():
    code = ("import sys\nfrom trainwell.cli import app\n"
            "from trainwell.config import load_config\nload_config('default', ['optim.lr=1e-3'])\n"
            "try:\n    app(['check', 'default'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'tensorboard') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_check_prints_resolved_config(cli):
    out = cli("check", "default", "--set", "optim.lr=4e-4")
    assert out.returncode == 0 and "lr = 0.0004" in out.stdout
