"""Session-wide fixtures: tiny checkpoints and real uvicorn edge servers on 127.0.0.1, built/started once."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import TinyPair, build_pair, derive_drafter


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TinyPair]:
    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, TinyPair] = {}

    def get(arch: str) -> TinyPair:
        if arch not in cache:
            cache[arch] = build_pair(root, arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def loaded_target(tiny_pair):
    """The tiny target of a family, loaded once in float64 (exact-equality tests; DESIGN.md §6)."""
    from covspec.models import load_model

    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(str(tiny_pair(arch).target), dtype="float64")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def edge_server(tiny_pair, loaded_target) -> Iterator[Callable[[str], object]]:
    """A real uvicorn edge server per family (default limits, no API key), sharing the loaded float64 target."""
    from covspec.runtime_edge.server import BackgroundServer
    from covspec.runtime_edge.settings import EdgeSettings

    servers: dict[str, BackgroundServer] = {}

    def get(arch: str) -> BackgroundServer:
        if arch not in servers:
            settings = EdgeSettings(target=str(tiny_pair(arch).target), port=0, dtype="float64")
            servers[arch] = BackgroundServer(settings, loaded_target(arch)).start()
        return servers[arch]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def drafter_engine(tiny_pair):
    from covspec.runtime_device.engines import load_engine

    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_engine("torch", str(tiny_pair(arch).drafter), dtype="float64")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def self_drafter_engine(tiny_pair):
    """``self_drafter_engine(arch)``: the family's tiny target loaded as a drafter engine (float64), so every draft is
    accepted. Loaded once per session."""
    from covspec.runtime_device.engines import load_engine

    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_engine("torch", str(tiny_pair(arch).target), dtype="float64")
        return cache[arch]

    return get


DERIVED_NOISE = 0.015  # measured: greedy acceptance 0.30-0.80 on the e2e prompts, every family and K in 1..6


@pytest.fixture(scope="session")
def derived_drafter_engine(tiny_pair, tmp_path_factory: pytest.TempPathFactory):
    """``derived_drafter_engine(arch)``: a copy of the family's tiny target with seeded weight noise
    (``derive_drafter``), loaded as a float64 drafter engine: accepted part of the time. Built once per session."""
    from covspec.runtime_device.engines import load_engine

    root = tmp_path_factory.mktemp("derived")
    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            path = derive_drafter(tiny_pair(arch).target, root / arch, noise=DERIVED_NOISE, seed=0)
            cache[arch] = load_engine("torch", str(path), dtype="float64")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def tiny_text_drafter(tmp_path_factory: pytest.TempPathFactory):
    """A tiny text-only Llama drafter sharing the tiny llava tokenizer, built once."""
    from covspec.models import build_tiny_text_drafter

    return build_tiny_text_drafter(tmp_path_factory.mktemp("tiny-text") / "drafter")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_pair, tiny_text_drafter, tmp_path_factory: pytest.TempPathFactory):
    """``tiny_bundle(arch)``: (drafter checkpoint, its exported and validated ONNX bundle), exported once per session.

    ``arch`` is one of llava, qwen2_vl, idefics3, or "text" for the text-only drafter.
    """
    pytest.importorskip("onnxruntime")
    from covspec.export.onnx_export import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            source = tiny_text_drafter if arch == "text" else tiny_pair(arch).drafter
            export_bundle(source, root / arch)
            cache[arch] = (source, root / arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def reduced_demo_pair(tmp_path_factory: pytest.TempPathFactory):
    """(TrainConfig.reduced(), PairPaths): the reduced demo pair, trained once per session (about 1-2 minutes)."""
    from covspec.demo.train import TrainConfig, train_pair

    config = TrainConfig.reduced()
    return config, train_pair(tmp_path_factory.mktemp("demo-pair") / "pair", config, seed=0)
