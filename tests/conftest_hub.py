"""Pytest fixture: a loopback fake hub, with ``huggingface_hub`` pointed at it and isolated.

Import the fixture into a test module (``from conftest_hub import fake_hub``) or list this
module in ``pytest_plugins`` of the root ``tests/conftest.py``.

``huggingface_hub`` copies most environment variables into ``huggingface_hub.constants`` at
import time, so setting the variables alone does nothing once it is imported. The fixture sets
both: the variables (for code that reads them at call time, such as
:func:`tahoeflow.sources.hub.fetch_file`, and for subprocesses) and the matching constants (for direct
library calls in this process). Nothing it configures can reach beyond 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub
from huggingface_hub import constants
from huggingface_hub.utils import close_session


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running :class:`FakeHub` serving ``tmp_path / "repo"`` (empty; tests add files).

    Sets ``HF_ENDPOINT`` to its URL, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE=0``, an empty
    ``HF_HOME`` under ``tmp_path`` and no token, in both ``os.environ`` and
    ``huggingface_hub.constants``; everything is restored afterwards.
    """
    root = tmp_path / "repo"
    root.mkdir()
    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    hub = FakeHub(root).start()
    close_session()  # a fresh HTTP client, built with the environment below
    try:
        env = {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(key, raising=False)

        consts = {
            "ENDPOINT": hub.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_TOKEN_PATH": str(hf_home / "token"),
            "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        }
        for key, value in consts.items():
            if hasattr(constants, key):
                monkeypatch.setattr(constants, key, value)
        yield hub
    finally:
        hub.stop()
        close_session()
