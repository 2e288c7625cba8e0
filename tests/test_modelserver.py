"""The model process: servers on one machine share it, it survives being killed, it leaves when idle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tinymodel import build_tiny_model

from rlm_vault.embeddings import Model2VecEmbedder
from rlm_vault.modelcache import load_in_memory
from rlm_vault.modelserver import ModelClient

WORDS = ["database", "migration", "failed", "cat", "food", "deploy", "pipeline", "schema"]
TEXTS = ["database migration failed", "cat food", "deploy the pipeline schema"]

# A child server process: embeds through the model process and prints that process's pid and a vector.
CHILD = """
import json, sys
from pathlib import Path
from rlm_vault.embeddings import Model2VecEmbedder
e = Model2VecEmbedder(sys.argv[1], cache_dir=Path(sys.argv[2]))
assert e.wait(120), e.status()
print(json.dumps({"pid": e._model.info["pid"], "vector": e.embed(["cat food"])[0].tolist()}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(WORDS, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def clients() -> Iterator[list[ModelClient]]:
    """Clients made by a test; each model process they reached is stopped afterwards."""
    made: list[ModelClient] = []
    yield made
    for pid in {c.info.get("pid") for c in made if c.info}:
        _stop(int(pid))


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def gone(pid: int, within: float = 60.0) -> bool:
    """Whether `pid` exits within `within` seconds (a zombie counts as gone: this process may be its parent)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_vectors_from_the_model_process_match_the_model(
    model_dir: Path, tmp_path: Path, clients: list[ModelClient]
) -> None:
    client = ModelClient(str(model_dir), tmp_path)
    clients.append(client)
    client.connect()
    served = unit(client.encode(TEXTS))
    exact = unit(load_in_memory(str(model_dir), "float32").encode(TEXTS))
    assert np.all(np.einsum("ij,ij->i", served, exact) > 0.999)


def test_servers_in_several_processes_share_one_model_process(
    model_dir: Path, tmp_path: Path, clients: list[ModelClient]
) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), str(tmp_path)], stdout=subprocess.PIPE)
        for _ in range(3)
    ]
    answers = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    pids = {a["pid"] for a in answers}
    assert len(pids) == 1 and pids != {p.pid for p in procs}
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # one shared copy
    client = ModelClient(str(model_dir), tmp_path)
    clients.append(client)
    assert client.connect()["pid"] in pids  # still serving after its starters left


def test_killed_model_process_is_replaced(
    model_dir: Path, tmp_path: Path, clients: list[ModelClient]
) -> None:
    client = ModelClient(str(model_dir), tmp_path)
    clients.append(client)
    first = client.connect()["pid"]
    before = client.encode(TEXTS)
    os.kill(first, signal.SIGKILL)
    assert gone(first)
    after = client.encode(TEXTS)  # reconnects to a new process
    assert client.info["pid"] != first
    assert np.allclose(before, after, atol=1e-6)


def test_model_process_leaves_when_no_server_is_connected(model_dir: Path, tmp_path: Path) -> None:
    client = ModelClient(str(model_dir), tmp_path, idle=0.5)
    pid = client.connect()["pid"]
    client.encode(TEXTS)
    client.close()
    assert gone(pid)
    assert not client.path.exists()  # the socket goes with it


def test_embedder_falls_back_to_mapping_when_the_process_cannot_come_back(
    model_dir: Path, tmp_path: Path, clients: list[ModelClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = Model2VecEmbedder(str(model_dir), cache_dir=tmp_path)
    assert embedder.wait(60), embedder.status()
    assert "model process" in embedder.status()[1]
    client = embedder._model
    assert isinstance(client, ModelClient)
    clients.append(client)
    pid = client.info["pid"]
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)

    def refuse(self: ModelClient) -> None:
        raise OSError("Resource temporarily unavailable")  # as fork fails when no process is left

    monkeypatch.setattr(ModelClient, "_popen", refuse)
    vector = embedder.embed(["cat food"])
    assert vector.shape == (1, 64) and "mapped from" in embedder.status()[1]
