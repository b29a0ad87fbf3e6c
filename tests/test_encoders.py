"""Encoders: the MiniLM hash check, local sentence-transformers folders, the registry."""

import shutil

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.encoders import available_encoders, get_encoder, minilm


def test_minilm_is_hash_checked_and_384_d():
    encoder = get_encoder("minilm")
    assert encoder.dim == 384
    assert encoder.weights_hash == minilm.MINILM_SHA256
    vectors = encoder.encode(["a sentence", "another one"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_minilm_with_wrong_weights_refuses_to_load(monkeypatch):
    monkeypatch.setattr(minilm, "MINILM_SHA256", "0" * 64)
    encoder = minilm.MiniLMEncoder()  # a fresh instance, not the cached one
    with pytest.raises(ls.CorruptCollectionError, match="sha256 mismatch"):
        encoder.encode(["x"])


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A copy of MiniLM in a plain folder, as a user's own sentence-transformers model would be."""
    folder = tmp_path_factory.mktemp("model") / "my-minilm"
    shutil.copytree(get_encoder("minilm").path, folder)
    return folder


def test_st_path_loads_a_local_folder(home, local_model):
    spec = f"st:{local_model}"
    encoder = get_encoder(spec)
    assert encoder.dim == 384
    reference = get_encoder("minilm").encode(["the same model"])
    assert np.allclose(encoder.encode(["the same model"]), reference, atol=1e-5)
    col = ls.create("local", encoder=spec, home=home)
    col.add(["a", "b"], ["stars and galaxies", "bread and butter"])
    assert col.search("astronomy", k=1)[0].id == "a"
    assert col.manifest["weights_hash"] == encoder.weights_hash
    col.close()


def test_changed_weights_are_detected_on_use(home, local_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(local_model, model)
    col = ls.create("pinned", encoder=f"st:{model}", home=home)
    col.close()
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    from latentsearch import encoders

    encoders._CACHE.pop(f"st:{model}", None)  # a new process would hash the new file
    col = ls.open("pinned", home=home)
    with pytest.raises(ls.EncoderMismatchError, match="weights of encoder"):
        col.search("anything")
    col.close()


def test_unknown_and_bad_encoder_specs(tmp_path):
    assert "minilm" in available_encoders() and "st:PATH" in available_encoders()
    with pytest.raises(ls.InvalidInputError, match="unknown encoder"):
        get_encoder("word2vec")
    with pytest.raises(ls.InvalidInputError, match="not a sentence-transformers model folder"):
        get_encoder(f"st:{tmp_path}")


def test_minilm_int8_agrees_with_the_pytorch_model(home):
    from .conftest import topic_items

    _, texts, metadata = topic_items()
    fast, reference = get_encoder("minilm-int8"), get_encoder("minilm")
    assert fast.dim == 384 and fast.weights_hash != reference.weights_hash  # a different encoder, pinned apart
    a, b = fast.encode(texts), reference.encode(texts)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(1).mean() >= 0.99
    col = ls.create("fast", encoder="minilm-int8", home=home)
    col.add([f"t{i}" for i in range(len(texts))], texts, metadata=metadata)
    assert [h.metadata["topic"] for h in col.search("telescopes and planets", k=3)] == ["astronomy"] * 3
    col.close()
    with pytest.raises(ls.EncoderMismatchError):
        ls.open("fast", home=home, encoder="minilm")


def test_minilm_int8_with_wrong_weights_refuses_to_run(monkeypatch):
    monkeypatch.setattr(minilm, "INT8_SHA256", "0" * 64)
    with pytest.raises(ls.CorruptCollectionError, match="sha256 mismatch"):
        minilm.MiniLMInt8Encoder().encode(["x"])
