"""Eight devices at once against one edge that batches their rounds (issue 14's acceptance): each gets exactly the
output it gets alone, greedy and seeded sampling, on llava and on qwen2_vl (M-RoPE) at float64; the rounds really
shared forwards (the edge's batch-size series), and the drafts were accepted as often as alone."""

from __future__ import annotations

import re
import threading

import httpx
import pytest

from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import BatchSettings, EdgeSettings
from covspec.spec.policy import PolicyKind
from tests.helpers import PROMPTS, image_bytes, pil

pytestmark = pytest.mark.e2e
DEVICES = 8
MAX_NEW = 16
# a batch waits up to this long from its oldest round for the others: eight devices in step fill it well before
WINDOW_S = 0.05


@pytest.fixture(scope="module")
def batching_server(tiny_pair, loaded_target):
    servers: dict[str, BackgroundServer] = {}

    def get(arch: str) -> BackgroundServer:
        if arch not in servers:
            batching = BatchSettings(max_batch=DEVICES, window_s=WINDOW_S)
            settings = EdgeSettings(target=str(tiny_pair(arch).target), port=0, dtype="float64", batching=batching)
            servers[arch] = BackgroundServer(settings, loaded_target(arch)).start()
        return servers[arch]

    yield get
    for server in servers.values():
        server.stop()


def _batches(server) -> tuple[float, float, float]:
    """(batched forwards, rows they held, forwards of at most 2 rows) so far."""
    text = httpx.get(f"{server.url}/metrics").text

    def total(pattern: str) -> float:
        return sum(float(x) for x in re.findall(pattern, text))

    return (
        total(r"covspec_batch_size_count\{[^}]*\} ([0-9.e+]+)"),
        total(r"covspec_batch_size_sum\{[^}]*\} ([0-9.e+]+)"),
        total(r'covspec_batch_size_bucket\{le="2.0"[^}]*\} ([0-9.e+]+)'),
    )


def _together(server, engine, jobs: list[tuple[bytes, str, GenerationConfig]]) -> list:
    """Every job on its own device (thread, connection) at once, started together."""
    results: list = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def device(index: int) -> None:
        img, prompt, config = jobs[index]
        start.wait(timeout=60)
        results[index] = generate(engine, EdgeClient(server.url), img, prompt, config)

    threads = [threading.Thread(target=device, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(r is not None for r in results), "a device did not finish"
    return results


def _jobs(config_of) -> list[tuple[bytes, str, GenerationConfig]]:
    return [(image_bytes(300 + i), PROMPTS[i % len(PROMPTS)], config_of(i)) for i in range(DEVICES)]


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_eight_greedy_devices_batched_each_get_the_targets_output(
    arch, batching_server, loaded_target, self_drafter_engine
) -> None:
    server, target, engine = batching_server(arch), loaded_target(arch), self_drafter_engine(arch)
    modes = list(VerifyMode)

    def config(i: int) -> GenerationConfig:  # the three verify modes and K = 2..4 among the devices
        return GenerationConfig(
            max_new_tokens=MAX_NEW, draft_len=2 + i % 3, verify_mode=modes[i % len(modes)], policy=PolicyKind.FIXED
        )

    jobs = _jobs(config)
    before = _batches(server)
    results = _together(server, engine, jobs)
    count, rows, small = (a - b for a, b in zip(_batches(server), before, strict=True))
    for (img, prompt, _), result in zip(jobs, results, strict=True):
        assert result.tokens == target.generate(pil(img), prompt, max_new_tokens=MAX_NEW), prompt
        assert result.stats["acceptance_rate"] == 1.0  # the target drafting for itself: every draft accepted
    assert rows >= sum(r.stats["rounds"] for r in results)  # every round was a row of some batch
    assert rows / count >= 3 and small < count, (count, rows, small)  # they shared forwards


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_eight_seeded_sampling_devices_batched_each_get_what_they_get_alone(
    arch, batching_server, derived_drafter_engine
) -> None:
    server, engine = batching_server(arch), derived_drafter_engine(arch)
    modes = list(VerifyMode)

    def config(i: int) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=MAX_NEW,
            temperature=1.0,
            top_k=8,
            seed=20 + i,
            draft_len=3,
            verify_mode=modes[i % len(modes)],
            policy=PolicyKind.FIXED,
        )

    jobs = _jobs(config)
    alone = [generate(engine, EdgeClient(server.url), img, prompt, c) for img, prompt, c in jobs]
    before = _batches(server)
    together = _together(server, engine, jobs)
    count, rows, _ = (a - b for a, b in zip(_batches(server), before, strict=True))
    for one, many in zip(alone, together, strict=True):
        assert many.tokens == one.tokens
        # the same rounds with the same outcomes: the edge's draws did not depend on who shared the batch
        assert (many.stats["rounds"], many.stats["aal"]) == (one.stats["rounds"], one.stats["aal"])
    assert 0.2 < sum(r.stats["acceptance_rate"] for r in alone) / DEVICES < 0.95  # the noisy copy: part of the time
    assert rows / count >= 3, (count, rows)
