"""Scale-out on Ray Serve, for real: a local Ray Serve deployment of 2 edge replicas on 127.0.0.1 serves 4 devices
(threads, one WebSocket each), and one replica is killed while every device is mid-generation. The devices on it
reconnect through Ray's proxy to the live replica, are told ``unknown_session`` and reopen their generation from the
tokens they committed; every device ends with the target's exact output (greedy), and the seeded-sampling device with
the output of an uninterrupted seeded run.

Every device is held after its third round until the replica is dead (a policy wrapper, the loop's own extension
point), so the kill lands mid-generation for all of them, with no timing guess."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from covspec.protocol import VerifyMode
from covspec.runtime_device.client import EdgeClient, RetryPolicy
from covspec.runtime_device.loop import GenerationConfig, GenerationResult, generate
from covspec.spec.policy import PolicyKind, RoundObservation
from tests.helpers import PROMPTS, image_bytes, pil

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'covspec[ray]'); it is not installed")
pytest.importorskip("ray.serve", reason="Ray Serve is missing (pip install 'covspec[ray]')")

from covspec.runtime_edge.ray_serve import REPLICA_HEADER, RayEdge  # noqa: E402
from covspec.runtime_edge.ray_settings import RaySettings  # noqa: E402
from covspec.runtime_edge.settings import EdgeSettings  # noqa: E402

pytestmark = pytest.mark.e2e
ARCH = "llava"
MAX_NEW = 32
HOLD_AFTER_ROUNDS = 3
GREEDY = GenerationConfig(max_new_tokens=MAX_NEW, draft_len=2, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.FIXED)
SEEDED = GenerationConfig(
    max_new_tokens=MAX_NEW, temperature=0.9, top_k=20, seed=11, draft_len=2, verify_mode=VerifyMode.DSSD,
    policy=PolicyKind.FIXED,
)  # fmt: skip
# (config, image seed, prompt); the seeded device is the first: its replica is the one killed
DEVICES = [(SEEDED, 7, PROMPTS[2]), (GREEDY, 3, PROMPTS[0]), (GREEDY, 5, PROMPTS[1]), (GREEDY, 9, PROMPTS[3])]
RETRY = RetryPolicy(first_delay_s=0.05, max_delay_s=0.5, reconnect_window_s=60)


class HeldPolicy:
    """The config's own drafting policy, holding the generation after ``rounds`` rounds: it reports ``reached`` and
    waits for ``go`` (so a test can act while the generation is surely under way)."""

    def __init__(self, config: GenerationConfig, rounds: int, reached: threading.Semaphore, go: threading.Event):
        self.inner, self.rounds = config.make_policy(), rounds
        self.reached, self.go = reached, go
        self.uses_margins = self.inner.uses_margins

    def plan(self, remaining: int, first_round: bool = False) -> Any:
        return self.inner.plan(remaining, first_round)

    def keep_drafting(self, position: int, margin: float) -> bool:
        return self.inner.keep_drafting(position, margin)

    def observe(self, observation: RoundObservation) -> None:
        self.inner.observe(observation)
        self.rounds -= 1
        if self.rounds == 0:
            self.reached.release()
            assert self.go.wait(timeout=120), "the test never let the generation go on"


def _kill_replica(replica: str) -> None:
    """Kill the Serve replica actor whose id is ``replica`` (its process ends, as a crash would); Serve starts a new
    one in its place."""
    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].endswith(f"#{replica}")]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)


@pytest.fixture(scope="module")
def ray_edge(tiny_pair):
    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, dtype="float64", threads=1)
    edge = RayEdge(settings, RaySettings(replicas=2, replica_cpus=1.0), log_level="warning").start()
    try:
        yield edge
    finally:
        edge.stop()


def test_two_replicas_serve_four_devices_through_a_replica_death(
    ray_edge, loaded_target, derived_drafter_engine
) -> None:
    target, engine = loaded_target(ARCH), derived_drafter_engine(ARCH)
    images = [image_bytes(seed) for _, seed, _ in DEVICES]
    greedy_want = [target.generate(pil(images[i]), DEVICES[i][2], max_new_tokens=MAX_NEW) for i in range(len(DEVICES))]
    # the seeded device's uninterrupted run, on the same deployment
    reference = EdgeClient(ray_edge.url, retry=RETRY)
    try:
        seeded_want = generate(engine, reference, images[0], DEVICES[0][2], SEEDED)
    finally:
        reference.close()
    assert seeded_want.stats["reconnects"] == 0 and len(seeded_want.tokens) > 2 * HOLD_AFTER_ROUNDS + 4

    clients = [EdgeClient(ray_edge.url, retry=RETRY) for _ in DEVICES]
    replicas = []
    for client in clients:  # one after another, so the proxy spreads them by the connections each replica holds
        client.connection().hello()
        replicas.append(client.connection().handshake_headers[REPLICA_HEADER])
    assert len(set(replicas)) == 2, f"the proxy put every device on one replica: {replicas}"

    reached, go = threading.Semaphore(0), threading.Event()
    results: list[GenerationResult | BaseException | None] = [None] * len(DEVICES)

    def device(i: int) -> None:
        config, _, prompt = DEVICES[i]
        try:
            policy = HeldPolicy(config, HOLD_AFTER_ROUNDS, reached, go)
            results[i] = generate(engine, clients[i], images[i], prompt, config, policy=policy)
        except BaseException as exc:  # reported below, with the device it happened to
            results[i] = exc
            reached.release()

    threads = [threading.Thread(target=device, args=(i,), name=f"device-{i}") for i in range(len(DEVICES))]
    try:
        for thread in threads:
            thread.start()
        for _ in DEVICES:  # every device holds a session, three rounds in
            assert reached.acquire(timeout=120)
        killed = replicas[0]
        _kill_replica(killed)
        go.set()
        for thread in threads:
            thread.join(timeout=180)
            assert not thread.is_alive()
        now_on = [client.connection().handshake_headers[REPLICA_HEADER] for client in clients]
    finally:
        go.set()
        for client in clients:
            client.close()

    for i, result in enumerate(results):
        assert isinstance(result, GenerationResult), f"device {i}: {result!r}"
        want = seeded_want.tokens if i == 0 else greedy_want[i]
        assert result.tokens == want, f"device {i} (replica {replicas[i]})"
        # exactly the devices on the killed replica reconnected, to a live one
        assert (result.stats["reconnects"] >= 1) == (replicas[i] == killed), f"device {i}"
    assert killed not in now_on
