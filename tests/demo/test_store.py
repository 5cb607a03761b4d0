"""The demo pair cache: location, keyed by digest, trained once, never left half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from covspec.demo import store
from covspec.demo.train import PairPaths, TrainConfig


def test_cache_root_precedence(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(store.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_root() == tmp_path / "xdg" / "covspec"
    monkeypatch.setenv(store.CACHE_ENV, str(tmp_path / "env"))
    assert store.cache_root() == tmp_path / "env"
    assert store.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(store.CACHE_ENV)
    assert store.cache_root() == Path.home() / ".cache" / "covspec"


def _fake_train(calls: list[Path]):
    def train(out: Path, config: TrainConfig, seed: int, progress=None) -> PairPaths:
        calls.append(Path(out))
        paths = PairPaths(Path(out))
        for folder in (paths.target, paths.drafter):
            folder.mkdir(parents=True)
            (folder / "config.json").write_text("{}")
        paths.info.write_text(json.dumps({"digest": config.digest(seed)}))
        return paths

    return train


def test_ensure_pair_trains_once_into_a_digest_keyed_folder(monkeypatch, tmp_path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(store, "train_pair", _fake_train(calls))
    config = TrainConfig.reduced()
    first = store.ensure_pair(tmp_path, config, seed=3)
    assert first.root == tmp_path / store.PAIR_DIR / config.digest(3)[:16]
    assert first.exists() and len(calls) == 1 and calls[0] != first.root  # trained elsewhere, then renamed
    again = store.ensure_pair(tmp_path, config, seed=3)
    assert again == first and len(calls) == 1
    other = store.ensure_pair(tmp_path, config, seed=4)
    assert other.root != first.root and len(calls) == 2
    assert sorted(p.name for p in (tmp_path / store.PAIR_DIR).iterdir()) == sorted([first.root.name, other.root.name])


def test_default_pair_comes_from_the_package_when_shipped(monkeypatch, tmp_path) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(store, "train_pair", _fake_train(calls))
    shipped = PairPaths(tmp_path / "shipped")
    monkeypatch.setattr(store, "shipped_pair", lambda: shipped)
    assert store.ensure_pair(tmp_path / "cache") == shipped and calls == []
    assert store.ensure_pair(tmp_path / "cache", use_shipped=False) != shipped and len(calls) == 1
    assert store.ensure_pair(tmp_path / "cache", seed=1) != shipped and len(calls) == 2
    monkeypatch.setattr(store, "shipped_pair", lambda: None)  # a package built without the weights
    assert store.ensure_pair(tmp_path / "cache").root.parent == tmp_path / "cache" / store.PAIR_DIR


def test_failed_training_leaves_nothing_behind(monkeypatch, tmp_path) -> None:
    def broken(out: Path, config: TrainConfig, seed: int, progress=None) -> PairPaths:
        (Path(out) / "target").mkdir(parents=True)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(store, "train_pair", broken)
    with pytest.raises(RuntimeError):
        store.ensure_pair(tmp_path, TrainConfig.reduced())
    assert list((tmp_path / store.PAIR_DIR).iterdir()) == []
