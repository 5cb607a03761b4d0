"""A device that survives its edge: the `covspec serve` process is killed mid-generation (as a crash would) and
started again on the same port; the device reconnects within its window and continues the generation on a fresh
session after the tokens it had committed, with the output of an uninterrupted run. When the edge stays away, the
generation ends with what was committed, which is the target's own output up to there."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import pytest

from covspec.errors import GenerationInterrupted
from covspec.link.presets import LinkProfile
from covspec.link.relay import TcpRelay
from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient, RetryPolicy
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate
from covspec.runtime_edge.server import ServeProcess
from covspec.spec.policy import PolicyKind
from tests.helpers import PROMPTS, image_bytes, pil

pytestmark = pytest.mark.e2e
ARCH = "llava"
MAX_NEW = 40
SLOW = LinkProfile("slow", one_way_delay_s=0.02)  # ~40 ms a round: a generation lasts long enough to be cut


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    found = re.search(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+-]+)", text)
    return float(found.group(1)) if found else 0.0


def _serve(target: str, port: int | None = None) -> ServeProcess:
    return ServeProcess(target, dtype="float64", threads=1, port=port).wait_ready()


def _generate_through_a_crash(engine, target_dir: str, config: GenerationConfig, restart: bool, window_s: float):
    """Generate through a slow relay; once the edge has verified a few rounds, kill it (and start it again on the
    same port when ``restart``). Returns (result or the interruption, the restarted edge's committed tokens)."""
    edge = _serve(target_dir)
    outcome: dict[str, object] = {}
    try:
        with TcpRelay("127.0.0.1", edge.port, link=SLOW) as relay:
            client = EdgeClient(
                relay.url, retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.5, reconnect_window_s=window_s)
            )

            def run() -> None:
                try:
                    outcome["result"] = generate(engine, client, image_bytes(7), PROMPTS[2], config)
                except GenerationInterrupted as exc:
                    outcome["interrupted"] = exc

            worker = threading.Thread(target=run)
            worker.start()
            deadline = time.monotonic() + 60
            while _metric(edge.url, "covspec_rounds_total") < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            edge.kill()
            if restart:
                edge = _serve(target_dir, port=edge.port)
            worker.join(timeout=120)
            assert not worker.is_alive()
            committed_after = _metric(edge.url, "covspec_committed_tokens_total") if restart else 0.0
            client.close()
    finally:
        edge.stop()
    return outcome, committed_after


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=MAX_NEW, draft_len=2, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.FIXED),
        GenerationConfig(
            max_new_tokens=MAX_NEW, temperature=0.9, top_k=20, seed=11, draft_len=2,
            verify_mode=VerifyMode.DSSD, policy=PolicyKind.FIXED,
        ),
    ],
    ids=["greedy", "seeded-sampling"],
)  # fmt: skip
def test_edge_restart_mid_generation_gives_the_uninterrupted_output(
    config, tiny_pair, loaded_target, derived_drafter_engine
) -> None:
    target_dir, engine = str(tiny_pair(ARCH).target), derived_drafter_engine(ARCH)
    # the uninterrupted run, on an edge of its own
    edge = _serve(target_dir)
    try:
        uninterrupted: GenerationResult = generate(engine, EdgeClient(edge.url), image_bytes(7), PROMPTS[2], config)
    finally:
        edge.stop()
    if config.temperature == 0:
        assert uninterrupted.tokens == loaded_target(ARCH).generate(
            pil(image_bytes(7)), PROMPTS[2], max_new_tokens=MAX_NEW
        )
    assert len(uninterrupted.tokens) > 12  # long enough that the cut lands mid-generation

    outcome, committed_after = _generate_through_a_crash(engine, target_dir, config, restart=True, window_s=60)
    result = outcome["result"]
    assert isinstance(result, GenerationResult)
    assert result.tokens == uninterrupted.tokens
    assert result.stats["reconnects"] >= 1
    # the restarted edge continued after what the device had committed: it verified only the rest
    assert 0 < committed_after < len(result.tokens)


def test_an_edge_that_stays_away_leaves_the_committed_prefix(tiny_pair, loaded_target, derived_drafter_engine) -> None:
    target_dir, engine = str(tiny_pair(ARCH).target), derived_drafter_engine(ARCH)
    want = loaded_target(ARCH).generate(pil(image_bytes(7)), PROMPTS[2], max_new_tokens=MAX_NEW)
    config = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=2, policy=PolicyKind.FIXED)
    outcome, _ = _generate_through_a_crash(engine, target_dir, config, restart=False, window_s=1.0)
    interrupted = outcome["interrupted"]
    assert isinstance(interrupted, GenerationInterrupted) and interrupted.code == "edge_unavailable"
    assert 0 < len(interrupted.tokens) < len(want) and interrupted.tokens == want[: len(interrupted.tokens)]
    assert interrupted.text == loaded_target(ARCH).decode(interrupted.tokens)
