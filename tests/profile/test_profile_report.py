"""From measured records to profile.json, the PNGs and report.html: hand-built records with known numbers, so every
summary figure can be checked; the HTML parsed for its sections and embedded images."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from covspec.profile.energy import EnergyReading, make_meter
from covspec.profile.energy.estimate import EstimateMeter
from covspec.profile.energy.radio import radio_energy
from covspec.profile.report import SECTIONS, write_outputs
from covspec.profile.run import GenerationRecord, ProfileConfig, ProfileItem, ProfileRun
from covspec.profile.stage_energy import StageWindow
from covspec.profile.stages import PrefillRecord, StepRecord
from covspec.profile.summary import summarize
from covspec.spec.policy import RoundObservation


class Page(HTMLParser):
    """Headings of the page's sections, and the src of every image."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag in ("script", "link") or (tag != "img" and "src" in a):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self._in_h2 = self._in_h2 and tag != "h2"

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def _record(run: int, wall: float, joules: float | None, with_edge: bool) -> GenerationRecord:
    prefill = PrefillRecord(0.004, {"preprocess": 0.002, "vision": 0.001, "reduce": 0.0001, "decoder": 0.0009},
                            160, 144, 12)  # fmt: skip
    steps = [StepRecord(1, 161 + i, 0.0002 + i * 1e-5) for i in range(8)] + [StepRecord(3, 170, 0.0005)]
    rounds = []
    stats = {}
    if with_edge:
        rounds = [RoundObservation(False, 4, 3, 4, 0.001, 0.004, 0.006, 40, 30) for _ in range(2)]
        stats = {"setup_s": 0.005, "edge_prefill_s": 0.003, "setup_uplink_bytes": 300, "setup_downlink_bytes": 70}
    reading = EnergyReading("estimate" if joules is not None else "none", joules, wall, 2,
                            {"cpu": 0.01, "idle": (joules or 0) - 0.01}, estimated=joules is not None)  # fmt: skip
    radio = radio_energy("wifi", 380, 130, 1) if with_edge else None
    tokens = list(range(8))
    return GenerationRecord(0, run, tokens, "a b", wall, [prefill], steps, reading, 1000, 1010, 4096, rounds, stats,
                            radio)  # fmt: skip


def _run(with_edge: bool, meter) -> ProfileRun:
    measured = meter.name != "none"
    records = [_record(r, 0.02 + r * 0.01, 0.08 + r * 0.02 if measured else None, with_edge) for r in range(3)]
    windows = {}
    if measured:
        windows = {
            "idle": StageWindow("idle", 1, EnergyReading("estimate", 1.5, 0.5, 2, estimated=True)),
            "prefill": StageWindow("prefill", 100, EnergyReading("estimate", 2.0, 0.5, 2, estimated=True)),
            "step": StageWindow("step", 2000, EnergyReading("estimate", 1.8, 0.5, 2, estimated=True)),
        }
    config = ProfileConfig(runs=3)
    items = [ProfileItem(b"\x89PNG...", "Describe the image.", "scene 0")]
    return ProfileRun(config, items, "http://127.0.0.1:1" if with_edge else None, meter, records, windows, 900, 2048,
                      "onnxruntime-cpu:test")  # fmt: skip


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_edge_profile_numbers_plots_and_page(tmp_path: Path) -> None:
    profile = summarize(_run(True, EstimateMeter()), {"system": "test-os", "cpus": 2, "missing": []})
    files = write_outputs(profile, tmp_path)
    assert set(files) == {"json", "stages", "steps", "energy", "html"}
    saved = json.loads(files["json"].read_text())
    assert saved["plots"] == {"stages": "stages.png", "steps": "steps.png", "energy": "energy.png"}
    stages = saved["stages"]
    assert stages["preprocess"]["seconds"]["median"] == pytest.approx(0.002)
    assert stages["step"]["seconds"]["n"] == 24 and stages["step"]["calls_per_generation"] == 8
    assert stages["feed"]["calls_per_generation"] == 1
    assert stages["edge_wait"]["seconds"]["median"] == pytest.approx(0.006)
    assert stages["link"]["seconds"]["median"] == pytest.approx(0.002)  # exchange minus the edge's verify
    assert saved["breakdown"]["edge verify"] == pytest.approx(0.008)  # two rounds of 4 ms
    assert saved["generation"]["tokens"]["median"] == 8
    energy = saved["energy"]
    assert energy["estimated"] and energy["label"] == "ESTIMATE"
    assert energy["joules_per_token"]["median"] == pytest.approx(0.10 / 8)
    per_generation = energy["stages"]["joules_per_generation"]
    assert per_generation["preprocess"] == pytest.approx(0.02 * 0.002 / 0.004)  # 20 mJ a prefill, half its time
    assert per_generation["steps"] == pytest.approx(0.0009 * 9)  # every decoder call at a step's joules
    assert per_generation["edge_wait"] == pytest.approx(3.0 * 0.012)  # idle watts x two 6 ms exchanges
    assert saved["radio"]["estimated"] and saved["radio"]["transfers_per_generation"]["median"] == 1
    wifi = radio_energy("wifi", 380, 130, 1)
    assert saved["radio"]["joules_per_token"]["median"] == pytest.approx(wifi.joules / 8)  # promotion + full tail
    back_to_back = saved["radio"]["back_to_back"]  # kept connected: tail power for the wall time, plus the bytes
    wall = saved["generation"]["wall_s"]["median"]
    assert back_to_back["joules_per_token"]["median"] == pytest.approx((wifi.bytes_j + 0.1193 * wall) / 8)
    assert saved["meter"]["name"] == "estimate" and saved["meter"]["not_measured"]
    assert saved["memory"]["generation_rss_growth_kib"]["median"] == 10
    for name in ("stages", "steps", "energy"):
        width, height = _png_size(files[name])
        assert 600 <= width <= 2000 and 300 <= height <= 1200
    page = parse(files["html"].read_text())
    assert page.sections == list(SECTIONS) and page.headings == list(SECTIONS.values())
    assert len(page.images) == 3 and not page.external
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).format == "PNG"
    assert "ESTIMATE" in files["html"].read_text()


def test_device_only_profile_without_energy(tmp_path: Path) -> None:
    profile = summarize(_run(False, make_meter("none")))
    files = write_outputs(profile, tmp_path)
    assert "energy" not in files and not (tmp_path / "energy.png").exists()
    saved = json.loads(files["json"].read_text())
    assert saved["edge_rounds"] is None and saved["radio"] is None
    assert saved["energy"] == {"measured": False}
    assert saved["tokens_are"].startswith("drafted")
    assert "edge_wait" not in saved["stages"] and "prefill" in saved["breakdown"]
    assert any("no meter" in line for line in saved["meter"]["not_measured"])
    page = parse(files["html"].read_text())
    assert page.headings == list(SECTIONS.values()) and len(page.images) == 2
