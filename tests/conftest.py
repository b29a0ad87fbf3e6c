"""Shared fixtures: a temporary data directory per test and a small real-text corpus."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import latentsearch as ls

# One model cache for the whole test session (subprocesses inherit it): the ONNX graph of MiniLM is
# exported once per run, and tests never touch the user's own ~/.cache.
os.environ.setdefault("LATENTSEARCH_CACHE", tempfile.mkdtemp(prefix="latentsearch-test-cache-"))

# Four clear topics; every topic has English and German items so filters have something to do.
TOPIC_DOCS = {
    "cooking": [
        "Simmer the tomato sauce with garlic and basil for twenty minutes.",
        "Knead the bread dough until it is smooth, then let it rise overnight.",
        "Roast the vegetables in a hot oven with olive oil and salt.",
        "Whisk eggs and sugar before folding in the flour for a sponge cake.",
        "Season the soup with pepper and a squeeze of lemon juice.",
    ],
    "astronomy": [
        "The telescope captured a spiral galaxy millions of light years away.",
        "Jupiter's moons orbit the giant planet in a few days each.",
        "A supernova explosion briefly outshines its entire galaxy.",
        "Astronomers measured the distance to the star with parallax.",
        "The comet's tail points away from the sun as it nears perihelion.",
    ],
    "programming": [
        "The function raises an exception when the list index is out of range.",
        "Refactor the class so that each method has a single responsibility.",
        "Compile the program with optimisations and run the unit tests.",
        "A hash map gives constant-time lookups of keys on average.",
        "Use a debugger to step through the loop and inspect variables.",
    ],
    "finance": [
        "The central bank raised interest rates to curb inflation.",
        "Diversify your portfolio across stocks, bonds and cash.",
        "The company's quarterly earnings beat analysts' expectations.",
        "A mortgage is a loan secured by the property it pays for.",
        "Bond prices fall when market interest rates rise.",
    ],
}


def topic_items() -> tuple[list[str], list[str], list[dict]]:
    """ids, texts and metadata of the topic corpus."""
    ids, texts, metadata = [], [], []
    for topic, docs in TOPIC_DOCS.items():
        for i, text in enumerate(docs):
            ids.append(f"{topic}-{i}")
            texts.append(text)
            metadata.append({"topic": topic, "lang": "en" if i % 2 == 0 else "de", "n": i})
    return ids, texts, metadata


@pytest.fixture(autouse=True)
def _huge_pages_setting():
    """The CLI's one-shot commands turn huge pages off in the environment (see cli/app.py); an
    in-process CLI test must not turn them off for the tests after it."""
    kept = os.environ.get("LATENTSEARCH_HUGE_PAGES")
    yield
    if kept is None:
        os.environ.pop("LATENTSEARCH_HUGE_PAGES", None)
    else:
        os.environ["LATENTSEARCH_HUGE_PAGES"] = kept


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh data directory, also set as LATENTSEARCH_HOME for CLI calls."""
    path = tmp_path / "home"
    monkeypatch.setenv("LATENTSEARCH_HOME", str(path))
    return path


@pytest.fixture
def walks(monkeypatch):
    """Filters planned onto the HNSW walk whatever their match count: on a test's small,
    low-dimensional collection an exact scan of the matches costs less, and the test is about the walk."""
    from latentsearch.backends import planner

    monkeypatch.setattr(planner, "WALK_DISTANCES_PER_EF", 0)
    planner.plan_filtered.cache_clear()  # (plans are cached by their inputs, not by the cost model)
    yield
    planner.plan_filtered.cache_clear()


@pytest.fixture(scope="session")
def topic_vectors() -> np.ndarray:
    """MiniLM vectors of the topic corpus (encoded once per test session)."""
    from latentsearch.encoders import get_encoder

    _, texts, _ = topic_items()
    return get_encoder("minilm").encode(texts)


@pytest.fixture
def topics(home, topic_vectors):
    """A MiniLM collection holding the topic corpus (vectors reused from the session fixture)."""
    ids, texts, metadata = topic_items()
    col = ls.create("topics", encoder="minilm", index="hnsw", home=home)
    col.add(ids, texts, vectors=topic_vectors, metadata=metadata)
    yield col
    col.close()


def random_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Gaussian float32 vectors for tests where meaning does not matter."""
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
