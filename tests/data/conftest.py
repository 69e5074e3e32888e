"""Fixtures for divlab.data: one prepared data dir per session, and no network."""
import socket

import pytest

from divlab import data


class NetworkUsed(OSError):
  """A test reached for the network; divlab.data must never do that."""


def _refuse(*args, **kwargs):
  del kwargs
  raise NetworkUsed(f"network access attempted in a test: {args[:2]!r}")


def _block_network(patcher: pytest.MonkeyPatch) -> None:
  """Makes every outgoing connection fail at once instead of hanging."""
  patcher.setattr(socket.socket, "connect", _refuse)
  patcher.setattr(socket.socket, "connect_ex", _refuse)
  patcher.setattr(socket, "create_connection", _refuse)
  patcher.setattr(socket, "getaddrinfo", _refuse)


@pytest.fixture
def no_network(monkeypatch):
  _block_network(monkeypatch)


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory):
  """A data dir holding every embedded dataset, prepared offline once per session."""
  data_dir = tmp_path_factory.mktemp("tfds_embedded")
  with pytest.MonkeyPatch.context() as patcher:
    _block_network(patcher)
    for name in data.EMBEDDED:
      data.prepare(name, data_dir=data_dir)
  return data_dir
