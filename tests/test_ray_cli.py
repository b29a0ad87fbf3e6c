"""The README's Ray walkthrough as typed in a fresh shell, with no Ray cluster running: ``--ray auto``
gives one line that says how to start a cluster, exits 1 and creates nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

import latentsearch as ls
import latentsearch.backends.sharded as distributed

pytest.importorskip("ray")

# The CLI in a fresh process that sees no running Ray whatever else runs on this machine: Ray's
# "auto" finds any local cluster by scanning processes (another test run's local Ray included), so
# its discovery is made to find nothing, which is what a fresh machine gives.
NO_CLUSTER = (
    "import sys, ray._private.services as services\n"
    "def nothing():\n    return []\n"
    "nothing.cache_clear = lambda: None\n"  # Ray clears the real one's cache on shutdown
    "services.find_gcs_addresses = nothing\n"
    "services.find_bootstrap_address = lambda temp_dir=None: None\n"
    "from latentsearch.cli import main\n"
    "sys.argv[0] = 'latentsearch'\n"
    "main()\n"
)


def latentsearch(*args: str, home, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "LATENTSEARCH_HOME": str(home), "RAY_ADDRESS": ""}
    return subprocess.run(
        [sys.executable, "-c", NO_CLUSTER, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def sharded_files(home, name, shards, monkeypatch):
    """A sharded collection's files, made without Ray (this test process keeps Ray out of it)."""
    with monkeypatch.context() as patch:
        patch.setattr(distributed, "connect_ray", lambda address: None)
        patch.setattr(ls.Connection, "open", lambda self, name, **options: None)
        ls.connect(home).create(name, encoder="minilm", shards=shards)


def test_ray_auto_without_a_running_cluster_says_how_to_start_one(home, tmp_path, monkeypatch):
    (tmp_path / "corpus.jsonl").write_text('{"id": "a", "text": "reset my password"}\n')
    # Refused before anything is written: no half-made collection to get in the way of a rerun.
    refused = one_line_error(latentsearch("--ray", "auto", "create", "big", "--shards", "4", home=home, cwd=tmp_path))
    assert not (home / "big").exists()
    assert refused == (
        "error: cannot reach a Ray cluster at 'auto': start one with `ray start --head` (then --ray auto finds it "
        "on this machine), or give no Ray address to run on a local Ray started for this process"
    )
    # `latentsearch create big --shards 4` (its files; this test process keeps Ray out of it).
    sharded_files(home, "big", 4, monkeypatch)
    for command in (["add", "big", "./corpus.jsonl"], ["search", "big", "reset my password", "-k", "10"]):
        assert one_line_error(latentsearch("--ray", "auto", *command, home=home, cwd=tmp_path)) == refused
    assert distributed.is_sharded("big", home=home)  # untouched
    # HOST:PORT where nothing listens: at once (Ray would retry for minutes), in one line.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # free once closed
    nobody = one_line_error(latentsearch("--ray", address, "add", "big", "./corpus.jsonl", home=home, cwd=tmp_path))
    assert nobody.startswith(f"error: cannot reach a Ray cluster at '{address}' (Connection refused): start one")


def test_the_server_answers_503_in_one_line_when_the_cluster_is_not_there(home, monkeypatch):
    import ray
    import ray._private.services as services
    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    if ray.is_initialized():
        pytest.skip("a Ray instance runs in this process")

    def nothing() -> list:
        return []

    nothing.cache_clear = lambda: None
    sharded_files(home, "big", 2, monkeypatch)
    monkeypatch.setattr(services, "find_gcs_addresses", nothing)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir=None: None)
    monkeypatch.setenv("RAY_ADDRESS", "")
    with TestClient(create_app(home, ray_address="auto", preload=False)) as client:
        answer = client.get("/api/collections/big")
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("cannot reach a Ray cluster at 'auto': start one with `ray start --head`")
