"""The fast text path: minilm through onnxruntime, equal to sentence-transformers, without PyTorch.

The ONNX graph is exported once per test session into the session's cache (conftest sets
LATENTSEARCH_CACHE); tests that damage or lose the cache work on a copy in their own folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import latentsearch as ls
from latentsearch import usercache
from latentsearch.encoders import get_encoder, graphs
from latentsearch.encoders.minilm import MiniLMEncoder
from latentsearch.fileio import file_sha256

from .conftest import TOPIC_DOCS


def varied_texts(n: int = 300, seed: int = 0) -> list[str]:
    """Short and long texts (past the 256-token window), several scripts, odd white space and symbols."""
    rng = random.Random(seed)
    words = " ".join(" ".join(docs) for docs in TOPIC_DOCS.values()).split()
    foreign = [
        "Um Ihr Passwort zurückzusetzen, öffnen Sie die Einstellungen.",
        "La facture arrive le premier jour de chaque mois.",
        "東京は日本の首都で、人口が最も多い都市です。",
        "Москва — столица России, крупнейший город страны.",
        "مرحبا بكم في المكتبة",
        "Ελληνικά γράμματα και αριθμοί 12345",
    ]
    texts = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            texts.append(" ".join(rng.choices(words, k=rng.randint(1, 12))))
        elif kind == 1:
            texts.append(" ".join(rng.choices(words, k=rng.randint(200, 600))))  # past the window
        elif kind == 2:
            texts.append(rng.choice(foreign) + " " + " ".join(rng.choices(words, k=rng.randint(0, 30))))
        elif kind == 3:
            texts.append(f"  \t{' '.join(rng.choices(words, k=rng.randint(2, 40)))}\n ")
        elif kind == 4:
            texts.append(f"E-{rng.randint(0, 99999)} {rng.choice(words)} 🙂 ${rng.random():.3f} #tag @user")
        else:
            texts.append(rng.choice(words))
    return texts


@pytest.fixture(scope="module")
def onnx_minilm() -> MiniLMEncoder:
    encoder = get_encoder("minilm")
    assert isinstance(encoder, MiniLMEncoder) and encoder.backend_in_use == "onnx"
    return encoder


def test_onnx_minilm_equals_sentence_transformers(onnx_minilm):
    texts = varied_texts()
    reference = MiniLMEncoder(backend="torch")
    assert reference.backend_in_use == "torch"
    fast, slow = onnx_minilm.encode(texts), reference.encode(texts)
    assert fast.shape == slow.shape == (len(texts), 384) and fast.dtype == np.float32
    assert float(np.abs(fast - slow).max()) <= 1e-5
    # Texts past the window are truncated alike: two texts that differ only after it encode alike.
    long = " ".join(["galaxies and telescopes"] * 200)
    a, b = onnx_minilm.encode([long, long + " bread and butter"])
    assert np.allclose(a, b, atol=1e-6)


def test_the_export_is_recorded_with_its_measured_error(onnx_minilm):
    folder = graphs.graph_folder(onnx_minilm.graph_name)
    record = json.loads((folder / graphs.CHECKSUMS_FILE).read_text())
    assert set(record["files"]) == {"model.onnx", "model.data"}
    assert 0 <= record["max_abs_diff"] <= 1e-5 and record["probes"] >= 10


def test_an_existing_minilm_collection_keeps_working(home, onnx_minilm):
    """A collection written by the PyTorch path (before the ONNX default) is the same encoder."""
    from .conftest import topic_items

    ids, texts, metadata = topic_items()
    old_vectors = MiniLMEncoder(backend="torch").encode(texts)
    col = ls.create("old", encoder="minilm", home=home)
    col.add(ids, texts, vectors=old_vectors, metadata=metadata)
    col.close()
    with ls.open("old", home=home) as col:
        hits = col.search("telescopes and planets", k=5)
        assert [h.metadata["topic"] for h in hits[:3]] == ["astronomy"] * 3
        col.add(["new"], ["A spiral galaxy seen through the telescope."])
        assert (
            np.abs(
                col.vectors_of(["new"])[0]
                - MiniLMEncoder(backend="torch").encode(["A spiral galaxy seen through the telescope."])[0]
            ).max()
            <= 1e-5
        )


def test_big_files_are_hashed_once_until_they_change(tmp_path, monkeypatch):
    calls = []
    real = usercache.file_sha256
    monkeypatch.setattr(usercache, "file_sha256", lambda p: calls.append(p) or real(p))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"x" * 1000)
    first = usercache.verified_sha256(weights)
    assert usercache.verified_sha256(weights) == first and len(calls) == 1  # remembered
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert usercache.verified_sha256(weights) == first and len(calls) == 2  # mtime changed: hashed again
    weights.write_bytes(b"y" * 1000)
    assert usercache.verified_sha256(weights) != first and len(calls) == 3  # content changed
    weights.write_bytes(b"y" * 999)
    assert len(calls) == 3 and usercache.verified_sha256(weights) != first and len(calls) == 4


def test_minilm_weights_check_is_cached_between_encoders(monkeypatch, onnx_minilm):
    calls = []
    real = usercache.file_sha256
    monkeypatch.setattr(usercache, "file_sha256", lambda p: calls.append(p) or real(p))
    assert MiniLMEncoder().weights_hash == onnx_minilm.weights_hash  # a fresh encoder, as a new process has
    assert calls == []


def _copy_cache(onnx_minilm: MiniLMEncoder, target: Path) -> Path:
    """A copy of the session's cache holding the exported graph; returns the copy's graph folder."""
    source = graphs.graph_folder(onnx_minilm.graph_name)
    copy = target / "onnx" / source.name
    shutil.copytree(source, copy)
    return copy


def test_a_damaged_cached_graph_is_detected_rebuilt_and_never_run(tmp_path, monkeypatch, caplog, onnx_minilm):
    from latentsearch.encoders import onnx

    folder = _copy_cache(onnx_minilm, tmp_path)
    monkeypatch.setenv(usercache.CACHE_ENV, str(tmp_path))
    data = folder / "model.data"
    full = data.stat().st_size
    loaded = []  # for every session opened on a cached graph: were its files the ones recorded?
    real_session = onnx.inference_session

    def checked_session(path, **kw):
        record = Path(path).parent / graphs.CHECKSUMS_FILE
        if record.exists():  # a cached graph (not one the export is still writing and verifying)
            recorded = json.loads(record.read_text())["files"]
            loaded.append(all(file_sha256(Path(path).parent / f) == d for f, d in recorded.items()))
        return real_session(path, **kw)

    monkeypatch.setattr(onnx, "inference_session", checked_session)
    texts = varied_texts(20, seed=1)
    reference = onnx_minilm.encode(texts)

    with open(data, "r+b") as handle:  # truncated
        handle.truncate(full // 2)
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        encoder = MiniLMEncoder()
        assert np.abs(encoder.encode(texts) - reference).max() <= 1e-5
    assert "damaged" in caplog.text and encoder.backend_in_use == "onnx"
    assert data.stat().st_size == full  # rebuilt in place
    caplog.clear()

    raw = bytearray(data.read_bytes())  # one flipped bit, same size
    raw[len(raw) // 3] ^= 0x10
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        encoder = MiniLMEncoder()
        assert np.abs(encoder.encode(texts) - reference).max() <= 1e-5
    assert "damaged" in caplog.text
    assert graphs.cached_graph(encoder.graph_name) is not None  # the rebuilt graph passes its checksums
    assert loaded == [True, True]  # two sessions, each over whole files: the damaged ones never ran


def test_an_unwritable_cache_falls_back_to_pytorch_with_one_warning(tmp_path, monkeypatch, caplog, onnx_minilm):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(usercache.CACHE_ENV, str(blocker / "cache"))  # cannot be created, even by root
    texts = ["reset your password", "quarterly earnings beat expectations"]
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        encoder = MiniLMEncoder()
        vectors = encoder.encode(texts)
    assert encoder.backend_in_use == "torch"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "PyTorch path" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage() and str(blocker) in warnings[0].getMessage()
    assert np.abs(vectors - onnx_minilm.encode(texts)).max() <= 1e-5


def test_an_export_that_does_not_reproduce_the_model_is_refused(tmp_path, monkeypatch, caplog):
    from latentsearch.encoders import export

    monkeypatch.setenv(usercache.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(export, "TEXT_TOLERANCE", -1.0)  # no graph can pass: the check must refuse it
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        encoder = MiniLMEncoder()
        assert encoder.backend_in_use == "torch"
    assert "differs from its PyTorch model" in caplog.text
    assert not graphs.graph_folder(encoder.graph_name).exists()
    assert not list((tmp_path / "onnx").glob(".*.tmp"))  # nothing half-made left behind
    caplog.clear()
    from latentsearch.encoders import minilm

    monkeypatch.setattr(minilm, "export_sentence_transformer", lambda *a, **k: pytest.fail("export retried"))
    with caplog.at_level(logging.WARNING, logger="latentsearch"):
        assert MiniLMEncoder().backend_in_use == "torch"  # the failure is remembered, not retried
    assert "delete it to retry" in caplog.text
    graphs.failure_path(encoder.graph_name).unlink()


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ls.InvalidInputError, match="unknown minilm backend 'tensorflow'"):
        MiniLMEncoder(backend="tensorflow")


NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from typer.testing import CliRunner
    import latentsearch as ls
    from latentsearch.cli import app

    home = sys.argv[1]
    runner = CliRunner()
    col = ls.create("notes", encoder="minilm", home=home)
    col.add(["a", "b"], ["Reset your password in the settings.", "Invoices arrive monthly."])
    assert col.search("forgot my password", k=1)[0].id == "a"
    col.close()
    out = {"python": sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)}
    cli_add = runner.invoke(app, ["add", "notes", sys.argv[2], "--home", home])
    cli_search = runner.invoke(app, ["search", "notes", "monthly bills", "-k", "1", "--json", "--home", home])
    assert cli_add.exit_code == 0 and cli_search.exit_code == 0, (cli_add.output, cli_search.output)
    out["cli_top"] = json.loads(cli_search.stdout)[0]["id"]
    out["cli"] = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)

    from fastapi.testclient import TestClient
    from latentsearch.server import create_app
    with TestClient(create_app(home)) as client:
        answer = client.post("/api/collections/notes/search", json={"query": "password help", "k": 1})
        assert answer.status_code == 200, answer.text
        out["http_top"] = answer.json()[0]["id"]
    out["server"] = sorted(m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules)
    print(json.dumps(out))
    """
)


def test_text_search_add_and_serve_leave_torch_unimported(tmp_path, onnx_minilm):
    """Once the graph is cached, Python, the CLI and the server encode text without PyTorch."""
    source = tmp_path / "more.jsonl"
    source.write_text(json.dumps({"id": "c", "text": "Your monthly bill is sent by email."}) + "\n")
    run = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, str(tmp_path / "home"), str(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "LATENTSEARCH_MINILM_BACKEND": ""},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["python"] == [] and out["cli"] == [] and out["server"] == []
    assert out["cli_top"] == "c" and out["http_top"] == "a"


def test_the_server_loads_models_at_start_up(home, caplog, onnx_minilm):
    from fastapi.testclient import TestClient

    from latentsearch.server import create_app

    ls.create("docs", encoder="minilm", home=home).close()
    ls.create("vecs", encoder="precomputed", dim=4, home=home).close()
    with caplog.at_level(logging.INFO, logger="uvicorn.error"), TestClient(create_app(home)) as client:
        lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
        assert any(line.startswith("loaded encoder minilm for docs in ") for line in lines), lines
        assert not any("vecs" in line for line in lines)  # nothing to load for precomputed vectors
        registry = client.app.state.registry
        assert registry.get("docs")._encoder is not None  # the model is there before any request
        assert registry.get("docs").backend._index is not None and registry.get("vecs").backend._index is not None


def test_efficientnet_runs_on_onnx_with_the_features_of_pytorch(tmp_path):
    from PIL import Image

    from latentsearch.encoders.image import EfficientNetLite0Encoder

    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        pixels = (rng.random((80 + 20 * i, 120, 3)) * 255).astype(np.uint8)
        pixels[:, : 10 * i] = [255, 0, 0]
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    fast = get_encoder("efficientnet-lite0")
    assert fast.backend_in_use == "onnx"
    slow = EfficientNetLite0Encoder(backend="torch")
    assert slow.backend_in_use == "torch"
    assert float(np.abs(fast.encode(files) - slow.encode(files)).max()) <= 1e-4


@pytest.mark.slow  # about 25 s: exports the ONNX graph in a fresh process
def test_the_cli_says_when_it_exports_the_model_and_then_stays_quiet(tmp_path, onnx_minilm):
    home = tmp_path / "home"
    ls.create("notes", encoder="minilm", home=home).close()
    source = tmp_path / "notes.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "Reset your password in the settings."}) + "\n")
    env = {**os.environ, usercache.CACHE_ENV: str(tmp_path / "fresh-cache"), "LATENTSEARCH_HOME": str(home)}
    cli = [sys.executable, "-m", "latentsearch.cli"]
    first = subprocess.run([*cli, "add", "notes", str(source)], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "exporting all-MiniLM-L6-v2 to ONNX (once per machine" in first.stderr
    again = subprocess.run(
        [*cli, "search", "notes", "forgot password", "--json"], capture_output=True, text=True, env=env, timeout=300
    )
    assert again.returncode == 0 and json.loads(again.stdout)[0]["id"] == "a"
    assert "exporting" not in again.stderr
