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
