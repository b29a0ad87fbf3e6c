"""The LangChain vector store: LangChain's own standard integration suite, and the collection's model."""

from __future__ import annotations

from collections.abc import Generator

import pytest

import latentsearch as ls

pytest.importorskip("langchain_core")
langchain_tests = pytest.importorskip("langchain_tests.integration_tests")

from langchain_core.documents import Document  # noqa: E402

from latentsearch.langchain import LatentSearchVectorStore  # noqa: E402

from .conftest import TOPIC_DOCS  # noqa: E402


class TestStandardSuite(langchain_tests.VectorStoreIntegrationTests):
    """LangChain's VectorStoreIntegrationTests, every test of it (sync and async, get_by_ids)."""

    @pytest.fixture()
    def vectorstore(self, tmp_path) -> Generator[LatentSearchVectorStore, None, None]:  # type: ignore[override]
        store = LatentSearchVectorStore.create("lc", embedding=self.get_embeddings(), home=tmp_path)
        try:
            yield store
        finally:
            store.collection.close()


@pytest.fixture
def topic_store(home):
    texts = [t for docs in TOPIC_DOCS.values() for t in docs]
    metadatas = [{"topic": topic} for topic, docs in TOPIC_DOCS.items() for _ in docs]
    store = LatentSearchVectorStore.from_texts(texts, metadatas=metadatas, home=home, collection_name="topics")
    yield store
    store.collection.close()


def test_the_collections_own_model_encodes_when_no_embeddings_are_given(topic_store, home):
    assert topic_store.embeddings is None and topic_store.collection.encoder_name == "minilm"
    found = topic_store.similarity_search("how far away is that star", k=2)
    assert [d.metadata["topic"] for d in found] == ["astronomy", "astronomy"]
    cooking = topic_store.similarity_search("what should I bake", k=3, filter={"topic": "cooking"})
    assert len(cooking) == 3 and {d.metadata["topic"] for d in cooking} == {"cooking"}
    scored = topic_store.similarity_search_with_relevance_scores("interest rates and inflation", k=2)
    assert scored[0][0].metadata["topic"] == "finance" and 0.5 < scored[0][1] <= 1.0
    by_vector = topic_store.similarity_search_by_vector(topic_store.collection.encode(["galaxy"])[0].tolist(), k=1)
    assert by_vector[0].metadata["topic"] == "astronomy"
    again = LatentSearchVectorStore(ls.open("topics", home=home))
    assert again.similarity_search("hash map lookups", k=1)[0].metadata == {"topic": "programming"}


def test_maximal_marginal_relevance_trades_nearness_for_variety(home):
    texts = ["The cat sat on the mat."] * 3 + ["A dog slept on the rug.", "Stock markets fell sharply today."]
    store = LatentSearchVectorStore.from_texts(texts, ids=[f"d{i}" for i in range(5)], home=home, collection_name="m")
    nearest = store.similarity_search("a cat on a mat", k=3)
    assert [d.page_content for d in nearest] == texts[:3]  # three copies of one sentence
    varied = store.max_marginal_relevance_search("a cat on a mat", k=3, fetch_k=5, lambda_mult=0.3)
    assert varied[0].page_content == texts[0] and len({d.page_content for d in varied}) == 3
    store.collection.close()


def test_documents_keep_their_ids_and_metadata_and_bad_input_is_refused(home):
    store = LatentSearchVectorStore.create("docs", home=home)
    ids = store.add_documents([Document(page_content="Volcanoes erupt lava.", metadata={"n": 1}, id="v")])
    assert ids == ["v"] and store.get_by_ids(["v", "missing"]) == [
        Document(id="v", page_content="Volcanoes erupt lava.", metadata={"n": 1})
    ]
    with pytest.raises(ls.InvalidInputError):
        store.add_texts(["one", "two"], metadatas=[{}])
    with pytest.raises(ls.FilterError):
        store.similarity_search("lava", filter="n >>> 1")
    with pytest.raises(ls.InvalidInputError, match="precomputed vectors: give the LangChain Embeddings"):
        LatentSearchVectorStore(ls.create("vectors", encoder="precomputed", dim=4, home=home))
    assert store.collection.count() == 1
    store.delete()  # None: every document
    assert store.collection.count() == 0
