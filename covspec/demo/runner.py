"""`covspec demo`: the trained pair behind a real `covspec serve`, the device runtime on held-out scenes, one table.

Modes, side by side in one run through the same server (and the same emulated link, if any): target-only (the
edge's chat completions), vanilla speculative decoding, and the best configuration the project has today (compact
verification; adaptive drafting and branching will take that row when they land). Prints nothing itself.
"""

from __future__ import annotations

import io
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covspec.demo import scenes
from covspec.demo.train import PairPaths
from covspec.link.presets import link_profile
from covspec.link.relay import TcpRelay
from covspec.models.loading import quiet_transformers
from covspec.protocol import VerifyMode

DRAFT_LEN = 4
MAX_NEW_TOKENS = 40


@dataclass(frozen=True)
class DemoMode:
    name: str
    verify_mode: VerifyMode | None  # None: target only
    draft_len: int = DRAFT_LEN


DEMO_MODES = (
    DemoMode("target-only", None, 0),
    DemoMode("vanilla", VerifyMode.VANILLA),
    DemoMode("compact", VerifyMode.COMPACT),  # the best configuration so far
)


def answer_matches(text: str, reference: str) -> bool:
    return text.strip() == reference.strip()


def run_demo(
    pair: PairPaths,
    *,
    bundle: Path | None = None,
    n_scenes: int = 20,
    link: str = "loopback",
    modes: tuple[DemoMode, ...] = DEMO_MODES,
    max_new_tokens: int = MAX_NEW_TOKENS,
    progress: Any = None,
) -> dict[str, Any]:
    """Rows of DESIGN.md §7 (``mode``, ``accuracy``, ``tokens_per_s``, ``speedup``, ``aal``, bytes per token,
    ``identical_to_target``) for the held-out scenes ``0 .. n_scenes - 1``. The drafter runs from its device
    ``bundle`` on ONNX Runtime (CPU) when one is given, else from the checkpoint on torch."""
    from covspec.runtime_device.client import EdgeClient
    from covspec.runtime_device.engines import load_engine
    from covspec.runtime_device.loop import GenerationConfig, generate, generate_target_only
    from covspec.runtime_edge.server import ServeProcess

    if not modes or modes[0].verify_mode is not None:
        raise ValueError("the first demo mode must be target-only: it is the reference the others are checked against")
    items = scenes.dataset("heldout", n_scenes)
    images = [_png(item.scene.image) for item in items]
    with quiet_transformers():
        if bundle is not None:
            engine = load_engine("onnxruntime", bundle, ep="cpu")
        else:
            engine = load_engine("torch", str(pair.drafter), dtype="float32")
    profile = link_profile(link)
    with ExitStack() as stack:
        server = ServeProcess(pair.target)
        stack.callback(server.stop)
        server.wait_ready()
        url = server.url
        if profile.shaped:
            relay = stack.enter_context(TcpRelay("127.0.0.1", server.port, link=profile))
            url = relay.url
        client = EdgeClient(url)
        task = progress.add_task("demo", total=len(items) * len(modes)) if progress is not None else None
        # scene by scene, every mode in turn: machine noise hits the modes alike (DESIGN.md §10)
        keys = ("tokens", "seconds", "up", "down", "rounds", "correct")
        totals = {mode.name: dict.fromkeys(keys, 0) for mode in modes}
        identical = {mode.name: True for mode in modes}
        for item, img in zip(items, images, strict=True):
            reference: list[int] | None = None
            for mode in modes:
                config = GenerationConfig(max_new_tokens=max_new_tokens, draft_len=mode.draft_len,
                                          verify_mode=mode.verify_mode or VerifyMode.COMPACT)  # fmt: skip
                if mode.verify_mode is None:
                    result = generate_target_only(client, img, item.question, config)
                    reference = result.tokens
                else:
                    result = generate(engine, client, img, item.question, config)
                    identical[mode.name] &= result.tokens == reference
                stats, total = result.stats, totals[mode.name]
                total["tokens"] += stats["generated_tokens"]
                total["seconds"] += stats["wall_s"]
                total["up"] += stats["uplink_bytes"]
                total["down"] += stats["downlink_bytes"]
                total["rounds"] += stats["rounds"]
                total["correct"] += answer_matches(result.text, item.answer)
                if progress is not None:
                    progress.advance(task)
        rows = []
        for mode in modes:
            total = totals[mode.name]
            n = max(total["tokens"], 1)
            rows.append({
                "mode": mode.name,
                "verify_mode": mode.verify_mode.value if mode.verify_mode else None,
                "draft_len": mode.draft_len,
                "accuracy": total["correct"] / len(items),
                "tokens_per_s": total["tokens"] / total["seconds"],
                "aal": total["tokens"] / total["rounds"] if total["rounds"] else None,
                "uplink_bytes_per_token": total["up"] / n,
                "downlink_bytes_per_token": total["down"] / n,
                "generated_tokens": total["tokens"],
                "identical_to_target": identical[mode.name],
            })  # fmt: skip
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / base
    return {
        "rows": rows,
        "scenes": n_scenes,
        "engine": "onnxruntime-fp32" if bundle is not None else "torch-fp32",
        "link": profile.name,
        "link_profile": {"one_way_delay_s": profile.one_way_delay_s, "uplink_bps": profile.uplink_bps,
                         "downlink_bps": profile.downlink_bps},
        "note": "bytes per token count per-token traffic only; the image upload and session setup are apart "
                "(target-only: its request is setup, its response is downlink)",
    }  # fmt: skip


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
