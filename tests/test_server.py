"""The HTTP API (FastAPI TestClient), its keys and limits, and the web page in a real browser."""

import io
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import latentsearch as ls
from latentsearch.server import create_app, load_keys, running, serve

from .browser import browser, console_errors, in_viewport
from .conftest import random_vectors, topic_items

RW, RO = "rw-key-0123456789abcdef", "ro-key-0123456789abcdef"


@pytest.fixture
def client(home, topic_vectors):
    ids, texts, metadata = topic_items()
    col = ls.create("topics", home=home, index="hnsw")
    col.add(ids, texts, vectors=topic_vectors, metadata=metadata)
    col.close()
    with TestClient(create_app(home)) as test_client:
        yield test_client


def test_collections_endpoints(client):
    listed = client.get("/api/collections").json()
    assert listed == [{"name": "topics", "count": 20, "encoder": "minilm", "dim": 384, "modality": "text"}]
    created = client.post("/api/collections", json={"name": "vecs", "encoder": "precomputed", "dim": 4})
    assert created.status_code == 201 and created.json()["dim"] == 4
    assert client.post("/api/collections", json={"name": "vecs", "encoder": "precomputed", "dim": 4}).status_code == 409
    assert client.get("/api/collections/vecs").json()["count"] == 0
    assert client.delete("/api/collections/vecs").json() == {"dropped": "vecs"}
    assert client.get("/api/collections/vecs").status_code == 404
    assert client.post("/api/collections", json={"name": "../evil"}).status_code == 400
    assert client.get("/api/collections/..evil").status_code == 400


def test_items_endpoints(client):
    new = [{"id": "n1", "text": "Sourdough needs a lively starter.", "metadata": {"topic": "cooking", "lang": "en"}}]
    assert client.post("/api/collections/topics/items", json={"items": new}).json() == {"added": 1, "count": 21}
    duplicate = client.post("/api/collections/topics/items", json={"items": new})
    assert duplicate.status_code == 409 and "already exists" in duplicate.json()["error"]
    assert client.post("/api/collections/topics/items", json={"items": new, "upsert": True}).status_code == 200
    got = client.get("/api/collections/topics/items", params={"ids": ["n1", "finance-0"]}).json()
    assert [g["id"] for g in got] == ["n1", "finance-0"] and got[0]["metadata"]["topic"] == "cooking"
    assert client.get("/api/collections/topics/items", params={"ids": ["ghost"]}).status_code == 404
    assert client.post("/api/collections/topics/items/delete", json={"ids": ["n1"]}).json() == {
        "deleted": 1,
        "count": 20,
    }
    assert client.post("/api/collections/topics/items/delete", json={"ids": ["n1"]}).status_code == 404
    empty = client.post("/api/collections/topics/items", json={"items": [{"id": "e", "text": "  "}]})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    patched = client.post("/api/collections/topics/items/metadata", json={"updates": {"finance-0": {"hot": True}}})
    assert patched.json() == {"updated": 1}
    found = client.post("/api/collections/topics/search", json={"query": "money", "where": "hot = true"}).json()
    assert [h["id"] for h in found] == ["finance-0"]
    ghost = client.post("/api/collections/topics/items/metadata", json={"updates": {"ghost": {"hot": True}}})
    assert ghost.status_code == 404 and "nothing was updated" in ghost.json()["error"]


def test_background_add_reports_progress(client):
    items = [{"id": f"bg{i}", "text": f"background item number {i} about bread"} for i in range(40)]
    started = client.post("/api/collections/topics/items", json={"items": items, "background": True})
    assert started.status_code == 202
    job = started.json()["job"]
    for _ in range(200):
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] != "running":
            break
        time.sleep(0.05)
    assert status == {
        "id": job,
        "state": "done",
        "done": 40,
        "total": 40,
        "passages": 40,
        "passages_total": 40,
        "error": None,
    }
    assert client.get("/api/collections/topics").json()["count"] == 60
    # A long text: the job counts its passages beside the items.
    from .test_passages import report

    long = client.post(
        "/api/collections/topics/items", json={"items": [{"id": "long", "text": report()}], "background": True}
    )
    for _ in range(400):
        status = client.get(f"/api/jobs/{long.json()['job']}").json()
        if status["state"] != "running":
            break
        time.sleep(0.05)
    assert status["state"] == "done" and status["done"] == status["total"] == 1
    assert status["passages"] == status["passages_total"] > 1
    assert client.get("/api/jobs/nope").status_code == 404


def test_search_recommend_outliers_and_maps(client):
    hits = client.post("/api/collections/topics/search", json={"query": "telescope and galaxies", "k": 3}).json()
    assert [h["metadata"]["topic"] for h in hits] == ["astronomy"] * 3
    lexical = client.post(
        "/api/collections/topics/search",
        json={"query": "parallax", "mode": "lexical", "where": 'lang = "de"', "explain": True},
    ).json()
    assert lexical[0]["id"] == "astronomy-3" and "**parallax**" in lexical[0]["snippet"]
    assert lexical[0]["details"]["mode"] == "lexical"
    filtered = client.post(
        "/api/collections/topics/search", json={"query": "money", "where": {"topic": "finance"}}
    ).json()
    assert {h["metadata"]["topic"] for h in filtered} == {"finance"}
    like = client.post("/api/collections/topics/search", json={"like": "cooking-0", "k": 2}).json()
    assert "cooking-0" not in [h["id"] for h in like]
    rec = client.post("/api/collections/topics/recommend", json={"positive": ["finance-0"], "k": 3}).json()
    assert [h["metadata"]["topic"] for h in rec] == ["finance"] * 3
    history = client.post(
        "/api/collections/topics/recommend/history", json={"history": [["cooking-0", 1.0], "cooking-1"], "k": 2}
    ).json()
    assert [h["metadata"]["topic"] for h in history] == ["cooking"] * 2
    outliers = client.get("/api/collections/topics/outliers", params={"k": 3, "contamination": 0.1}).json()
    assert 1 <= len(outliers) <= 2 and outliers[0]["flagged"] and outliers[0]["neighbors"]
    checked = client.post(
        "/api/collections/topics/check", json={"texts": ["Preheat the oven.", "Quantum chromodynamics"], "k": 3}
    ).json()
    assert len(checked) == 2 and checked[1]["score"] > checked[0]["score"]
    data = client.get("/api/collections/topics/map", params={"method": "pca"}).json()
    assert len(data["ids"]) == 20 and len(data["coords"][0]) == 2 and 0 < data["trustworthiness"] <= 1
    clusters = client.post("/api/collections/topics/clusters", json={"n": 4}).json()
    assert sorted(c["size"] for c in clusters) == [5, 5, 5, 5]
    path = client.get("/api/collections/topics/interpolate", params={"start": "cooking-0", "end": "finance-0"}).json()
    assert len(path) == 8 and not {"cooking-0", "finance-0"} & {step["id"] for step in path}
    assert {"to_start", "to_end", "between"} <= set(path[0])


def wait_for_job(client, job: str, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while (status := client.get(f"/api/jobs/{job}").json())["state"] == "running":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def test_the_map_view_is_umap_once_computed_in_the_background(home):
    col = ls.create("vecs", encoder="precomputed", dim=8, home=home)
    col.add([f"v{i}" for i in range(12)], vectors=random_vectors(12, 8), metadata=[{"n": i} for i in range(12)])
    ls.create("tiny", encoder="precomputed", dim=8, home=home).add(["a", "b"], vectors=random_vectors(2, 8))
    col.close()
    with TestClient(create_app(home, preload=False)) as client:
        view = client.get("/api/collections/vecs/map/view").json()
        assert (view["method"], view["preferred"], view["ready"], view["job"]) == ("pca", "umap", False, None)
        assert len(view["ids"]) == len(view["coords"]) == len(view["metadata"]) == 12 and view["trustworthiness"] > 0
        started = client.post("/api/collections/vecs/map/jobs", json={"method": "umap"})
        assert started.status_code == 202 and started.json()["status"] == f"/api/jobs/{started.json()['job']}"
        job = started.json()["job"]
        status = wait_for_job(client, job)
        assert status == {"id": job, "state": "done", "done": 1, "total": 1, "error": None}
        view = client.get("/api/collections/vecs/map/view").json()
        assert (view["method"], view["ready"], view["job"]) == ("umap", True, None) and len(view["ids"]) == 12
        # The job's projection is the library's default UMAP one (the CLI's map reads the same cache).
        assert ls.open("vecs", home=home).project("umap").coords.tolist() == view["coords"]
        # Work the engine refuses fails the job with its one-line reason; the view of a collection too
        # small for any map is a 400.
        failed = wait_for_job(client, client.post("/api/collections/tiny/map/jobs", json={}).json()["job"])
        assert failed["state"] == "failed" and "umap needs at least 6 items" in failed["error"]
        tiny = client.get("/api/collections/tiny/map/view")
        assert tiny.status_code == 400 and "pca needs at least 3 items" in tiny.json()["error"]


def test_the_same_work_started_twice_while_it_runs_is_one_job():
    import threading

    from latentsearch.server.jobs import Jobs

    jobs, release, runs = Jobs(), threading.Event(), []

    def work(progress):
        runs.append(1)
        progress.stage("projecting")
        release.wait(30)

    first = jobs.start(work, 1, key="map:vecs:umap")
    assert jobs.start(work, 1, key="map:vecs:umap") == first and jobs.running("map:vecs:umap") == first
    assert jobs.start(work, 1, key="map:other:umap") != first  # other work runs beside it
    release.set()
    while jobs.get(first)["state"] == "running":  # the work returns at once now
        threading.Event().wait(0.01)
    assert jobs.get(first)["state"] == "done" and "stage" not in jobs.get(first)
    assert jobs.running("map:vecs:umap") is None and jobs.start(work, 1, key="map:vecs:umap") != first


def test_the_info_names_the_derived_layers_and_the_page_has_an_icon(client):
    assert client.get("/api/collections/topics").json()["layers"] == {}
    assert client.post("/api/collections/topics/clusters", json={"n": 4}).status_code == 200
    layers = client.get("/api/collections/topics").json()["layers"]
    assert layers["clusters"]["fields"] == ["cluster", "cluster_label"]
    for path in ("/favicon.svg", "/favicon.ico"):
        icon = client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.text.startswith("<svg")
    assert 'rel="icon" href="/favicon.svg"' in client.get("/").text


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "message"),
    [
        ("post", "/api/collections/topics/search", {"query": "x", "where": "lang ="}, 400, "malformed filter"),
        ("post", "/api/collections/topics/search", {"query": "x", "k": 0}, 422, "body.k: Input should be greater"),
        ("post", "/api/collections/topics/search", {"query": "x", "like": "cooking-0"}, 400, "exactly one"),
        ("post", "/api/collections/topics/search", {"vector": [1.0, 2.0]}, 400, "wrong vector dimension"),
        ("post", "/api/collections/topics/search", {"like": "ghost"}, 404, "unknown id"),
        ("post", "/api/collections/missing/search", {"query": "x"}, 404, "not found"),
        ("post", "/api/collections/topics/recommend", {"positive": []}, 400, "at least one positive"),
        ("post", "/api/collections/topics/search", {"k": "many"}, 422, ""),
        ("post", "/api/collections/topics/items", {"items": "not a list"}, 422, ""),
        ("get", "/api/collections/topics/outliers?method=zscore", None, 400, "unknown outlier method"),
        ("get", "/api/collections/topics/map?method=mds", None, 400, "unknown projection"),
        ("get", "/api/collections/topics/map/view?sample=0", None, 422, "query.sample: Input should be greater"),
        ("get", "/api/collections/missing/map/view", None, 404, "not found"),
        ("post", "/api/collections/topics/map/jobs", {"method": "mds"}, 422, "body.method: Input should be 'pca'"),
        ("post", "/api/collections/topics/map/jobs", {"dim": 4}, 422, "body.dim: Input should be less"),
        ("post", "/api/collections/topics/map/jobs", {"sample": 0}, 422, "body.sample"),
        ("post", "/api/collections/topics/map/jobs", {"seed": -1}, 422, "body.seed"),
        ("post", "/api/collections/missing/map/jobs", {}, 404, "not found"),
    ],
)
def test_errors_have_status_codes_and_messages(client, method, url, body, status, message):
    response = getattr(client, method)(url, json=body) if body is not None else getattr(client, method)(url)
    assert response.status_code == status
    if message:
        assert message in response.json()["error"]
    assert client.get("/api/collections/topics").json()["count"] == 20  # nothing changed


def test_limits(home):
    ls.create("vecs", encoder="precomputed", dim=2, home=home).close()
    with TestClient(create_app(home, max_body=2_000, max_batch=5)) as small:
        items = [{"id": f"i{i}", "vector": [1.0, float(i)]} for i in range(6)]
        too_many = small.post("/api/collections/vecs/items", json={"items": items})
        assert too_many.status_code == 413 and "limit of 5" in too_many.json()["error"]
        big = [{"id": "x" * 3000, "vector": [1.0, 2.0]}]
        too_big = small.post("/api/collections/vecs/items", json={"items": big})
        assert too_big.status_code == 413 and "byte limit" in too_big.json()["error"]
        assert small.get("/api/collections/vecs").json()["count"] == 0


def chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    """``data`` as a generator, so that httpx sends it with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def multipart(name: str, filename: str, content: bytes, boundary: str = "b0undary") -> tuple[bytes, str]:
    """A multipart/form-data body of one file, and its content type."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
    body = (head + "Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_chunked_bodies_over_the_limit_get_413_in_the_error_shape(home):
    ls.create("vecs", encoder="precomputed", dim=2, home=home).close()
    ls.create("pics", encoder="efficientnet-lite0", home=home).close()
    items = {"items": [{"id": f"i{i}", "vector": [1.0, float(i)]} for i in range(100)]}
    big_json = json.dumps(items).encode()
    upload, upload_type = multipart("files", "a.png", b"\x89PNG" + b"0" * 5_000)
    query, query_type = multipart("file", "q.png", b"\x89PNG" + b"0" * 5_000)
    refused = {"error": "request body over the 2,000-byte limit: send smaller batches"}
    with running(create_app(home, max_body=2_000, preload=False)) as url:  # real uvicorn, chunks on the wire
        for path, body, content_type in [
            ("/api/collections/vecs/items", big_json, "application/json"),
            ("/api/collections/vecs/search", json.dumps({"vector": [0.5] * 2_000}).encode(), "application/json"),
            ("/api/collections/pics/images", upload, upload_type),
            ("/api/collections/pics/search/image", query, query_type),
        ]:
            answer = httpx.post(url + path, content=chunks(body), headers={"Content-Type": content_type})
            assert answer.request.headers["transfer-encoding"] == "chunked"
            assert (answer.status_code, answer.json()) == (413, refused), path
        assert httpx.get(url + "/api/collections/vecs").json()["count"] == 0
        assert not list((home / "pics").glob("uploads/*"))  # nothing of the refused upload was kept
        # Under the limit, a chunked body is read as usual.
        small = json.dumps({"items": items["items"][:3]}).encode()
        added = httpx.post(
            url + "/api/collections/vecs/items", content=chunks(small, 50), headers={"Content-Type": "application/json"}
        )
        assert added.json() == {"added": 3, "count": 3}


@pytest.mark.parametrize(
    ("method", "url", "content", "status", "message"),
    [
        ("get", "/api/nothing-here", None, 404, "no such endpoint: GET /api/nothing-here (the API is listed at /docs)"),
        ("put", "/api/collections", None, 405, "method not allowed: PUT /api/collections (allowed: GET, POST)"),
        ("delete", "/api/collections/topics/search", None, 405, "method not allowed: DELETE"),
        (
            "post",
            "/api/collections/topics/search",
            b'{"query": ',
            422,
            "malformed request: body is not valid JSON at character 10: Expecting value",
        ),
        ("post", "/api/collections/topics/search", b"[1, 2]", 422, "malformed request: body: Input should be"),
        ("post", "/api/collections/topics/search", b"\xff\xfe", 422, "malformed request"),
    ],
)
def test_framework_errors_have_the_error_shape(client, method, url, content, status, message):
    response = client.request(method.upper(), url, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"] and body["error"].startswith(message) and "\n" not in body["error"]


def test_the_schema_documents_the_error_shape(client):
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }, f"{method} {path}"
            assert "422" not in operation["responses"]  # FastAPI's default {"detail": [...]} is never sent
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_keys(home, tmp_path, monkeypatch):
    ls.create("vecs", encoder="precomputed", dim=2, home=home).close()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# keys\n{RW} rw\n{RO} ro\n")
    keys = load_keys(keys_file)
    assert keys == {RW: "rw", RO: "ro"}
    with TestClient(create_app(home, keys=keys)) as client:
        assert client.get("/api/collections").status_code == 401
        assert client.get("/api/collections", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 401
        assert client.get("/api/collections", headers={"X-API-Key": RO}).status_code == 200
        assert client.get("/api/collections", headers={"Authorization": f"Bearer {RO}"}).status_code == 200
        item = {"items": [{"id": "a", "vector": [1.0, 0.0]}]}
        refused = client.post("/api/collections/vecs/items", json=item, headers={"X-API-Key": RO})
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert client.post("/api/collections/vecs/items", json=item, headers={"X-API-Key": RW}).status_code == 200
        assert client.get("/healthz").status_code == 200  # liveness needs no key
    monkeypatch.setenv("LATENTSEARCH_API_KEY", RW)
    assert load_keys() == {RW: "rw"}
    bad = tmp_path / "bad"
    bad.write_text("short rw\n")
    with pytest.raises(ls.InvalidInputError, match="line 1"):
        load_keys(bad)


def test_non_loopback_without_key_is_refused(monkeypatch, home):
    monkeypatch.delenv("LATENTSEARCH_API_KEY", raising=False)
    monkeypatch.delenv("LATENTSEARCH_READ_KEY", raising=False)
    with pytest.raises(ls.InvalidInputError, match="refusing to serve on 0.0.0.0 without an API key"):
        serve(home, host="0.0.0.0", port=0)


def test_cors_is_off_unless_configured(home):
    with TestClient(create_app(home)) as client:
        assert (
            "access-control-allow-origin"
            not in client.get("/api/collections", headers={"Origin": "http://x.test"}).headers
        )
    with TestClient(create_app(home, cors_origins=["http://x.test"])) as client:
        response = client.get("/api/collections", headers={"Origin": "http://x.test"})
        assert response.headers["access-control-allow-origin"] == "http://x.test"


def test_image_upload_search_and_thumbnails(home):
    from sklearn.datasets import load_sample_images

    ls.create("pics", encoder="efficientnet-lite0", home=home).close()
    files = []
    for i, photo in enumerate(load_sample_images().images):
        buffer = io.BytesIO()
        Image.fromarray(photo[:200, :200]).save(buffer, format="PNG")
        files.append(("files", (f"../../photo{i}.png", buffer.getvalue(), "image/png")))
    with TestClient(create_app(home)) as client:
        added = client.post("/api/collections/pics/images", files=files).json()
        assert added["ids"] == ["photo0.png", "photo1.png"] and added["count"] == 2
        uploads = list((home / "pics" / "uploads").iterdir())
        assert len(uploads) == 2  # inside the collection, whatever the client called the file
        thumb = client.get("/api/collections/pics/thumbnails/photo1.png")
        assert thumb.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(thumb.content)).size[0] <= 96
        hits = client.post(
            "/api/collections/pics/search/image", files={"file": ("q.png", files[1][1][1], "image/png")}
        ).json()
        assert hits[0]["id"] == "photo1.png"
        broken = client.post("/api/collections/pics/images", files=[("files", ("x.png", b"not an image", "image/png"))])
        assert broken.status_code == 400 and "cannot read image" in broken.json()["error"]
        assert len(list((home / "pics" / "uploads").iterdir())) == 2  # the failed upload was removed
        assert client.get("/api/collections/pics/thumbnails/ghost").status_code == 404
        # No request makes the server read a file of its choosing: image items arrive as uploads only.
        sneaky = client.post("/api/collections/pics/items", json={"items": [{"id": "x", "uri": "/etc/hostname"}]})
        assert sneaky.status_code == 400 and "upload them" in sneaky.json()["error"]


def test_concurrent_readers_while_one_writer_adds(home):
    ls.create("vecs", encoder="precomputed", dim=8, index="hnsw", home=home).close()
    errors, done = [], threading.Event()
    with TestClient(create_app(home)) as client:

        def write() -> None:
            for b in range(20):
                vectors = random_vectors(25, 8, b)
                items = [{"id": f"b{b}-{i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
                r = client.post("/api/collections/vecs/items", json={"items": items})
                if r.status_code != 200:
                    errors.append(r.text)
            done.set()

        def read() -> None:
            while not done.is_set():
                r = client.post("/api/collections/vecs/search", json={"vector": [1.0] * 8, "k": 5})
                if r.status_code != 200 or len({h["id"][: h["id"].index("-")] for h in r.json()}) > 5:
                    errors.append(r.text)

        threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert client.get("/api/collections/vecs").json()["count"] == 500


@pytest.fixture
def live_server(home, topic_vectors):
    """The app under a real uvicorn on a free loopback port, over the topic corpus with a clusters layer."""
    ids, texts, metadata = topic_items()
    col = ls.create("topics", home=home)
    col.add(ids, texts, vectors=topic_vectors, metadata=metadata)
    col.clusters(4)  # derived fields: the page leaves them out unless asked
    col.close()
    with running(create_app(home)) as url:
        yield url


FIELD_NAMES = "return [...document.querySelectorAll(arguments[0] + ' table.fields th')].map(e => e.textContent)"


def test_web_page_search_and_more_like_this_in_a_browser(live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(live_server + "/")
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: d.find_element(By.ID, "collection").get_attribute("value") == "topics")
        wait.until(lambda d: "trustworthiness" in d.find_element(By.ID, "map-info").text)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#outliers li")) > 0)
        # The header counts the collection; the icon is served.
        wait.until(lambda d: d.find_element(By.ID, "counts").text == "20 items · 20 passages")
        icon = driver.execute_script("return document.querySelector('link[rel=icon]').href")
        assert icon == live_server + "/favicon.svg" and httpx.get(icon).status_code == 200
        # No UMAP map cached: PCA, saying so, with the button that computes one.
        assert driver.find_element(By.ID, "map-info").text.startswith("PCA of 20 items, trustworthiness 0.")
        assert "UMAP keeps neighbours together" in driver.find_element(By.ID, "map-note").text
        assert driver.find_element(By.ID, "compute-map").is_displayed()
        driver.find_element(By.ID, "query").send_keys("planets and telescopes")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.hit")) == 10)
        first = driver.find_elements(By.CSS_SELECTOR, "#results li.hit")[0]
        assert first.get_attribute("data-id").startswith("astronomy")
        assert driver.find_element(By.ID, "results-title").text == "Results for “planets and telescopes”"
        assert driver.find_element(By.ID, "map").get_attribute("data-highlighted") == "10"
        # Metadata as a key/value table, not JSON; the clusters layer's fields only once asked for.
        assert driver.execute_script(FIELD_NAMES, "#results li.hit") == ["topic", "lang", "n"] * 10
        assert "astronomy" in first.find_element(By.CSS_SELECTOR, "table.fields").text
        assert '{"' not in driver.find_element(By.ID, "results").text
        toggle = driver.find_element(By.CSS_SELECTOR, "#layer-toggles input[data-layer=clusters]")
        assert toggle.find_element(By.XPATH, "..").text == "show clusters"
        toggle.click()
        assert driver.execute_script(FIELD_NAMES, "#results li.hit")[:5] == [
            "topic",
            "lang",
            "n",
            "cluster",
            "cluster_label",
        ]
        toggle.click()
        assert "cluster" not in driver.execute_script(FIELD_NAMES, "#results li.hit")
        assert console_errors(driver) == []
        # "More like this": the recommendations come above the results, in view, under their heading.
        first = driver.find_elements(By.CSS_SELECTOR, "#results li.hit")[0]  # the toggle rendered the list anew
        first.find_element(By.CSS_SELECTOR, "button.more").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recommendations li.hit")) == 8)
        recommended = [
            li.get_attribute("data-id") for li in driver.find_elements(By.CSS_SELECTOR, "#recommendations li.hit")
        ]
        assert recommended[0].startswith("astronomy") and first.get_attribute("data-id") not in recommended
        assert driver.find_element(By.ID, "rec-title").text.startswith("More like astronomy")
        assert in_viewport(driver, "#rec-title") and in_viewport(driver, "#recommendations li.hit")
        assert driver.execute_script(FIELD_NAMES, "#recommendations li.hit")[:3] == ["topic", "lang", "n"]
        # From the bottom of the results too, below the fold: the page scrolls up to the new ones.
        last = driver.find_elements(By.CSS_SELECTOR, "#results li.hit")[-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", last)
        assert not in_viewport(driver, "#rec-title")
        last.find_element(By.CSS_SELECTOR, "button.more").click()
        wait.until(lambda d: d.find_element(By.ID, "rec-title").text == f"More like {last.get_attribute('data-id')}")
        assert in_viewport(driver, "#rec-title") and in_viewport(driver, "#recommendations li.hit")
        # And from a recommendation.
        third = driver.find_elements(By.CSS_SELECTOR, "#recommendations li.hit")[2]
        third_id = third.get_attribute("data-id")
        third.find_element(By.CSS_SELECTOR, "button.more").click()
        wait.until(lambda d: d.find_element(By.ID, "rec-title").text == f"More like {third_id}")
        assert in_viewport(driver, "#rec-title") and in_viewport(driver, "#recommendations li.hit")
        driver.save_screenshot(str(tmp_path / "more-like-this.png"))
        assert driver.find_element(By.ID, "error").text == "" and console_errors(driver) == []
        # A long document: the hit says which passage matched, and shows that passage's snippet.
        from .test_passages import QUERY, report

        added = httpx.post(
            f"{live_server}/api/collections/topics/items", json={"items": [{"id": "report", "text": report()}]}
        )
        assert added.status_code == 200, added.text
        box = driver.find_element(By.ID, "query")
        box.clear()
        box.send_keys(QUERY)
        driver.find_element(By.ID, "go").click()
        # Read the list in one script call: the page re-renders it, so element handles may go stale.
        first_hit = (
            "const li = document.querySelector('#results li.hit');"
            "return li && [li.dataset.id, (li.querySelector('.where') || {}).textContent, li.textContent];"
        )
        wait.until(lambda d: (d.execute_script(first_hit) or [None])[0] == "report")
        hit_id, where, text = driver.execute_script(first_hit)
        assert where.startswith("passage ") and "lava" in text
        assert not driver.find_element(By.ID, "rec-section").is_displayed()  # a new search comes first
    finally:
        driver.quit()


def test_web_page_shows_a_cached_umap_map_and_computes_one_on_request(home, topic_vectors, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ids, texts, metadata = topic_items()
    col = ls.create("topics", home=home)
    col.add(ids, texts, vectors=topic_vectors, metadata=metadata)
    col.project("umap")  # what `latentsearch map topics --method umap` caches
    col.close()
    vecs = ls.create("vecs", encoder="precomputed", dim=8, home=home)
    vecs.add([f"v{i}" for i in range(12)], vectors=random_vectors(12, 8))
    vecs.close()
    with running(create_app(home)) as url:
        driver = browser()
        try:
            driver.get(url + "/")
            wait = WebDriverWait(driver, 20)
            wait.until(lambda d: d.find_element(By.ID, "map-info").text.startswith("UMAP of 20 items, trustworthiness"))
            assert driver.find_element(By.ID, "map").get_attribute("data-method") == "umap"
            assert not driver.find_element(By.ID, "map-note").is_displayed()
            assert in_viewport(driver, "#map")
            driver.save_screenshot(str(tmp_path / "umap.png"))
            # A collection without one: PCA for now, and UMAP computed in the background on request.
            Select(driver.find_element(By.ID, "collection")).select_by_value("vecs")
            wait.until(lambda d: d.find_element(By.ID, "map-info").text.startswith("PCA of 12 items"))
            wait.until(lambda d: d.find_element(By.ID, "counts").text == "12 items · 12 passages")
            driver.find_element(By.ID, "compute-map").click()
            WebDriverWait(driver, 120).until(
                lambda d: d.find_element(By.ID, "map-info").text.startswith("UMAP of 12 items")
            )
            assert not driver.find_element(By.ID, "map-note").is_displayed()
            assert driver.find_element(By.ID, "error").text == "" and console_errors(driver) == []
        finally:
            driver.quit()


def test_non_json_numbers_give_422_not_500(client):
    # Regression (found by the property tests): FastAPI's default handler echoed Infinity back and crashed.
    response = client.post(
        "/api/collections/topics/search", content='{"query": Infinity}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error"].startswith("malformed request: body.query")


def test_sharded_collections_are_opened_on_the_given_ray_cluster(home, monkeypatch):
    from typer.testing import CliRunner

    import latentsearch.server as server
    from latentsearch.cli import app
    from latentsearch.connection import Connection
    from latentsearch.server import Registry

    opened = {}

    def fake_open(db, name, **options):  # the registry opens through its connection
        return opened.update(options, name=name, home=db.home, ray_address=db.ray_address) or object()

    monkeypatch.setattr(Connection, "open", fake_open)
    Registry(home, ray_address="ray://head:10001").get("big")
    assert opened == {"name": "big", "home": home, "ray_address": "ray://head:10001"}
    served = {}
    monkeypatch.setattr(server, "serve", lambda home, **options: served.update(options))
    assert CliRunner().invoke(app, ["--ray", "head:6379", "serve", "--port", "8123"]).exit_code == 0
    assert served["ray_address"] == "head:6379" and served["port"] == 8123


def test_warm_up_opens_indexes_and_reports_each_encoder_once(home):
    from latentsearch.workflows.warmup import warm_up

    cols = [ls.create(name, encoder="precomputed", dim=4, home=home) for name in ("a", "b")]
    for col in cols:
        col.add(["x"], vectors=random_vectors(1, 4, 0))
        col.close()
    cols = [ls.open(name, home=home) for name in ("a", "b")]
    assert all(col.backend._index is None for col in cols)
    (warmed,) = warm_up(cols)
    assert (warmed.encoder, warmed.collections, warmed.error, warmed.has_model) == (
        "precomputed",
        ["a", "b"],
        None,
        False,
    )
    assert all(col.backend._index is not None for col in cols)  # the first search need not open it
    for col in cols:
        col.close()


def test_a_search_option_added_to_the_request_appears_in_http():
    import dataclasses

    from latentsearch.search.request import SearchRequest
    from latentsearch.server.models import SearchBody, search_body_model

    @dataclasses.dataclass(frozen=True)
    class Wider(SearchRequest):
        rerank: int = dataclasses.field(default=0, metadata={"description": "Candidates to rerank.", "ge": 0, "le": 50})

    schema = search_body_model(Wider, "WiderBody").model_json_schema()
    assert schema["properties"]["rerank"] == {
        "default": 0,
        "description": "Candidates to rerank.",
        "maximum": 50,
        "minimum": 0,
        "title": "Rerank",
        "type": "integer",
    }
    # Every field of the request is in the body, with the request's default and description.
    body = SearchBody.model_json_schema()["properties"]
    for spec in dataclasses.fields(SearchRequest):
        assert (
            body[spec.name]["default"] == spec.default
            and body[spec.name]["description"] == spec.metadata["description"]
        )
    # The schema asks for exactly one of query, vector and like (not null).
    assert [branch["required"] for branch in schema["oneOf"]] == [["query"], ["vector"], ["like"]]
