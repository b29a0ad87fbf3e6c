"""Crash-point enumeration: each writing operation is killed just before each of its file operations
in turn, and the next process must find a working collection (or none, for create/drop), with nothing
half-made left once it has run. (tests/test_reliability.py does the same for ``doctor --repair``.)"""

import shutil

import numpy as np
import pytest

import latentsearch as ls
from latentsearch.workflows.doctor import doctor

from .faults import crash_points

N, DIM = 400, 8


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture
def pristine(tmp_path):
    """A saved collection (HNSW, some deletes) to copy back before each crash."""
    home = tmp_path / "pristine"
    col = ls.create("c", encoder="precomputed", dim=DIM, index="hnsw", home=home)
    col.add([f"v{i}" for i in range(N)], vectors=vectors(N, 0), metadata=[{"g": i % 5} for i in range(N)])
    col.delete([f"v{i}" for i in range(0, N, 10)])
    col.close()
    return home


def run(tmp_path, pristine, prelude: str, action: str, check) -> int:
    home = tmp_path / "home"

    def reset():
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(pristine, home)

    prelude = f"import numpy as np\nimport latentsearch as ls\nHOME = {str(home)!r}\n{prelude}"
    return crash_points(tmp_path, prelude, action, reset, lambda point: check(home, point))


def leftovers(home) -> list[str]:
    return sorted(
        p.name
        for p in home.rglob(".*")
        if ".tmp" in p.name or ".creating-" in p.name or ".dropping-" in p.name or ".salvage-" in p.name
    )


def assert_whole(home, count: int, point: int) -> None:
    col = ls.open("c", home=home)
    assert col.count() == count, point
    probe = vectors(N, 0)[7]
    assert col.search(probe, k=1)[0].id == "v7", point
    assert len(col.search(probe, k=20, where={"g": 2})) == 20, point
    col.close()
    assert doctor("c", home=home).healthy, (point, doctor("c", home=home).findings)


def test_checkpoint(tmp_path, pristine):
    def check(home, point):
        assert_whole(home, N - N // 10 + 30, point)  # the add committed in SQLite before the checkpoint
        assert not leftovers(home), point

    prelude = (
        "col = ls.open('c', home=HOME)\ncol.add([f'n{i}' for i in range(30)], vectors=np.ones((30, 8), 'float32'))"
    )
    assert run(tmp_path, pristine, prelude, "col.save()", check) >= 3


def test_compact(tmp_path, pristine):
    def check(home, point):
        assert_whole(home, N - N // 10, point)
        assert not leftovers(home), point

    assert run(tmp_path, pristine, "col = ls.open('c', home=HOME)\ncol.backend.index", "col.compact()", check) >= 3


def test_projection_cache(tmp_path, pristine):
    def check(home, point):
        col = ls.open("c", home=home)
        assert len(col.project("pca").ids) == N - N // 10, point
        col.close()
        assert not leftovers(home), point

    assert run(tmp_path, pristine, "col = ls.open('c', home=HOME)", "col.project('pca')", check) >= 1


def test_create(tmp_path, pristine):
    def check(home, point):
        names = ls.list_collections(home=home)
        if "new" in names:
            assert ls.open("new", home=home).count() == 0, point
        col = ls.create("new", encoder="precomputed", dim=DIM, home=home, exist_ok=True)
        col.add(["x"], vectors=np.ones((1, DIM), np.float32))
        col.close()
        assert not leftovers(home), point  # a later create cleans what a killed one left

    action = "ls.create('new', encoder='precomputed', dim=8, home=HOME).close()"
    assert run(tmp_path, pristine, "", action, check) >= 2


def test_drop(tmp_path, pristine):
    def check(home, point):
        if "c" in ls.list_collections(home=home):
            assert_whole(home, N - N // 10, point)  # not dropped yet: all there
            ls.drop("c", home=home)
        assert "c" not in ls.list_collections(home=home), point
        ls.create("c", encoder="precomputed", dim=DIM, home=home).close()
        assert not leftovers(home), point  # what a killed drop left goes with the next create

    assert run(tmp_path, pristine, "", "ls.drop('c', home=HOME)", check) >= 2


RATINGS = "user_id,item_id,rating\n" + "".join(
    f"u{u},i{(u * 7 + j) % 12},{1 + (u + j) % 5}\n" for u in range(15) for j in range(4)
)


def interactions_file(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS)
    return path


def assert_fitted(home, point) -> None:
    col = ls.open("cf", home=home)
    assert (col.count(), col.user_count()) == (12, 15), point
    assert len(col.recommend(user="u1", k=3)) == 3, point
    col.close()
    assert doctor("cf", home=home).healthy, point


@pytest.mark.slow  # 2-4 min each: every crash point starts a process importing scikit-learn
@pytest.mark.parametrize("replace", [False, True])
def test_fit_interactions(tmp_path, pristine, replace):
    """A crash anywhere leaves no collection under the name, the old one (replace) or the whole new one,
    never one without users; rerunning works and leaves nothing behind."""
    ratings = interactions_file(tmp_path)
    if replace:
        ls.fit_interactions(ratings, into="cf", factors=2, home=pristine).close()

    def check(home, point):
        if "cf" in ls.list_collections(home=home):
            assert_fitted(home, point)
        ls.fit_interactions(ratings, into="cf", factors=3, home=home, replace=True).close()
        assert_fitted(home, point)
        assert ls.open("cf", home=home).dim == 3, point
        assert not leftovers(home), point

    prelude = f"import scipy.sparse, sklearn.decomposition\nRATINGS = {str(ratings)!r}"
    action = f"ls.fit_interactions(RATINGS, into='cf', factors=3, home=HOME, replace={replace}).close()"
    assert run(tmp_path, pristine, prelude, action, check) >= 4
