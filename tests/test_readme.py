"""The README's promises: two set-up commands, and a tour that runs."""
import pathlib
import re

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
CI_SCRIPT = (pathlib.Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()


def test_first_screen_has_the_two_setup_commands_ci_uses():
  first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
  commands = [line for line in first_block.splitlines() if line.strip()]
  assert len(commands) == 2, commands
  assert "divlab.run" in commands[0]
  test_command = commands[1].split("&&")[-1].strip()
  assert test_command in CI_SCRIPT, (test_command, CI_SCRIPT)


def test_api_tour_runs(capsys):
  code = re.search(r"## A tour of the API.*?```python\n(.*?)```", README, re.S).group(1)
  exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "nan" not in printed.lower(), printed
  assert len(printed.splitlines()) >= 8


def test_own_loop_example_runs_and_learns(capsys):
  code = re.search(r"## Using divlab from your own loop.*?```python\n(.*?)```",
                   README, re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out
  assert "train_accuracy" in printed, printed
  # The labels are a simple function of x: the tiny net must fit them.
  assert namespace["final"]["train_accuracy"] > 0.8, namespace["final"]
  losses = [r["train_loss"] for r in namespace["log"] if "train_loss" in r]
  assert len(losses) == 3 and losses[-1] < losses[0], losses
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(namespace["restored"]),
               namespace["params"])


def test_own_config_example_applies_changes_after_the_arg():
  code = re.search(r"### Writing your own config.*?```python\n(.*?)```",
                   README, re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  config = namespace["get_config"]("smoke")
  assert tuple(config.methods) == ("ce", "kd")
  assert config.kd.temperature == 2.0
  assert config.train.num_steps < 100  # the smoke settings are kept
