"""Each family README lists its configs' keys and method names."""
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAMILIES = sorted(p.parent.name for p in ROOT.glob("experiments/*/README.md"))


def _flat_keys(config, prefix=""):
  keys = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      keys.update(_flat_keys(value, prefix + key + "."))
    else:
      keys[prefix + key] = value
  return keys


@pytest.mark.parametrize("family", FAMILIES)
def test_readme_lists_every_config_key_and_method(family):
  readme = (ROOT / "experiments" / family / "README.md").read_text()
  assert "## Config keys and methods" in readme
  section = readme.split("## Config keys and methods", 1)[1]
  config_files = sorted((ROOT / "configs" / family).glob("[!_]*.py"))
  assert config_files
  for path in config_files:
    assert f"`configs/{family}/{path.name}`" in section, path.name
    module = importlib.import_module(f"configs.{family}.{path.stem}")
    for arg in ("", "smoke"):
      keys = _flat_keys(module.get_config(arg))
      for key in keys:
        head, _, rest = key.partition(".")
        assert f"`{head}`" in section and (not rest or f"`{rest}`" in section), (
            f"{family}: `{key}` of {path.name} is not listed")
      for list_key in ("methods", "solvers", "dph.methods", "off_policy.methods"):
        for name in keys.get(list_key, ()):
          assert f"`{name}`" in section, f"{family}: {list_key} `{name}` not listed"
