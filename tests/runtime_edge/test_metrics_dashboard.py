"""The Grafana dashboard (docs/grafana/covspec-edge.json) and docs/metrics.md agree with what a real edge exports.

One edge serves a session (rounds and a burst), a chat completion and a refused scrape, so every series has samples;
then its /metrics is read back: every metric a dashboard query names is exported with the type its suffix needs,
every exported series is documented with its type and labels (and nothing documented is gone), every label a query
groups by or names in a legend is on the series it reads, and the dashboard has the panels docs/metrics.md promises.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from covspec.protocol import RoundRequest, SessionSpec, encode_open, encode_round
from covspec.protocol.messages import OpenRequest
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeSettings
from tests.helpers import PROMPTS, image_bytes

pytestmark = pytest.mark.e2e
ARCH = "llava"
KEY = "metrics-dashboard-key"
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "covspec-edge.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus at scrape time, not in the edge's text
PANELS = (
    "Committed tokens/s",
    "Rounds/s by verify mode",
    "Acceptance rate (accepted / drafted)",
    "Accepted per round by verify mode",
    "Batch size by schedule",
    "Queue wait by schedule",
    "Batch forward seconds",
    "Verify latency",
    "Prefill latency",
    "Model wait steps p95 by kind",
    "Sessions active",
    "KV reserved bytes",
    "Errors/s by code",
    "Round bytes/s by direction",
    "Edge busy share",
)
SUFFIX_TYPES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram", "_total": "counter"}


@pytest.fixture(scope="module")
def scrape(tiny_pair, loaded_target) -> dict[str, tuple[str, dict[str, set[str]]]]:
    """``{family: (type, {sample name: label names})}`` of one edge's /metrics after some traffic of every kind."""
    settings = EdgeSettings(target=str(tiny_pair(ARCH).target), port=0, dtype="float64", api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    with BackgroundServer(settings, loaded_target(ARCH)) as server:
        _session(server.url, auth)
        _chat(server.url, auth)
        refused = httpx.get(f"{server.url}/metrics")  # the scrape needs the key, and the refusal is counted
        assert refused.status_code == 401, refused.text
        reply = httpx.get(f"{server.url}/metrics", headers=auth)
        assert reply.status_code == 200, reply.text
    families: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for family in text_string_to_metric_families(reply.text):
        samples: dict[str, set[str]] = {}
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
        families[family.name] = (family.type, samples)
    return families


def _session(url: str, auth: dict[str, str]) -> None:
    """Two compact greedy rounds and a burst over /v1/connect."""
    ws_url = url.replace("http://", "ws://") + "/v1/connect?device=metrics"
    with connect(ws_url, additional_headers=auth, compression=None, open_timeout=10, max_size=None) as ws:
        assert msgpack.unpackb(ws.recv(timeout=10))["t"] == "hello"
        ws.send(encode_open(OpenRequest(SessionSpec(PROMPTS[1], max_new_tokens=16), image_bytes(5))))
        assert msgpack.unpackb(ws.recv(timeout=60))["t"] == "opened"
        requests = [RoundRequest(n, np.asarray([7, 9], dtype=np.int32)) for n in (1, 2)]
        requests.append(RoundRequest(3, np.zeros(0, dtype=np.int32), burst=2))
        for request in requests:
            ws.send(encode_round(request))
            reply = msgpack.unpackb(ws.recv(timeout=60))
            assert reply["t"] == "verdict", reply


def _chat(url: str, auth: dict[str, str]) -> None:
    uri = "data:image/png;base64," + base64.b64encode(image_bytes(4)).decode()
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": PROMPTS[2]}]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60)
    assert reply.status_code == 200, reply.text


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    return [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(PromQL, legend format) of every panel target and query variable."""
    found = [(t["expr"], t.get("legendFormat", "")) for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((query["query"] if isinstance(query, dict) else query, ""))
    return found


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bcovspec_[A-Za-z0-9_]+", expr))


def _split(name: str, families: dict) -> tuple[str, str]:
    """(family, suffix) of a sample name: ``_bucket``/``_sum``/``_count`` of a histogram, ``_total`` of a counter."""
    for suffix, kind in SUFFIX_TYPES.items():
        base = name.removesuffix(suffix)
        if base != name and families.get(base, ("", {}))[0] == kind:
            return base, suffix
    return name, ""


def _documented_rows() -> dict[str, str]:
    """Table rows of docs/metrics.md that name a series first: ``{name: row}``."""
    rows: dict[str, str] = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = re.match(r"\| `(covspec_[a-z0-9_]+)`", line)
        if match:
            rows[match.group(1)] = line
    return rows


def test_every_metric_a_query_reads_is_exported_with_its_type(scrape) -> None:
    queries = _queries(_dashboard())
    names = set().union(*(_metric_names(expr) for expr, _ in queries))
    assert len(names) >= 15, names
    for name in sorted(names):
        family, suffix = _split(name, scrape)
        assert family in scrape, f"{name}: no such family in /metrics"
        kind, samples = scrape[family]
        assert kind == SUFFIX_TYPES.get(suffix, "gauge"), f"{name} reads a {kind} as a {SUFFIX_TYPES.get(suffix)}"
        assert name in samples, f"{name}: the {kind} {family} exports no sample of that name"


def test_every_exported_series_is_documented(scrape) -> None:
    rows = _documented_rows()
    doc = METRICS_DOC.read_text()
    exported: set[str] = set()
    for family, (kind, samples) in scrape.items():
        assert family.startswith("covspec_"), f"{family}: the edge's registry exports only covspec_ series"
        base = family.removesuffix("_created")
        if kind == "gauge" and base != family and scrape.get(base, ("",))[0] in ("counter", "histogram"):
            assert "_created" in doc, "the _created series of counters and histograms are not documented"
            continue
        name = family + "_total" if kind == "counter" else family
        exported.add(name)
        assert name in rows, f"{name} ({kind}) is exported but has no row in docs/metrics.md"
        assert kind in rows[name], f"{name}: its row does not say it is a {kind}"
        for label in set().union(*samples.values()) - {"le"}:
            assert f"`{label}`" in rows[name], f"{name}: its row does not document the label {label}"
    assert set(rows) <= exported, f"documented but not exported: {sorted(set(rows) - exported)}"


def test_every_label_a_query_groups_by_is_on_its_series(scrape) -> None:
    labels_of = {name: labels for _, samples in scrape.values() for name, labels in samples.items()}
    checked = 0
    for expr, legend in _queries(_dashboard()):
        grouped = {label.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr) for label in group.split(",")}
        grouped.discard("")
        for name in _metric_names(expr):
            assert name in labels_of, f"{expr}: {name} is not exported"
            missing = grouped - labels_of[name] - TARGET_LABELS
            assert not missing, f"{expr}: {name} has no label {sorted(missing)}"
            checked += 1
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert shown <= grouped, f"the legend {legend!r} names labels {expr!r} does not keep"
    assert checked >= 20


def test_the_dashboard_has_its_panels_each_with_its_own_id_place_and_unit() -> None:
    dashboard = _dashboard()
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    titles = {p["title"] for p in panels}
    assert set(PANELS) <= titles, sorted(set(PANELS) - titles)
    assert 39 <= dashboard["schemaVersion"] <= 42  # Grafana 11 and 12
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in dashboard["__inputs"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["instance"]["multi"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert '{job=~"$job",instance=~"$instance"}' in target["expr"], target["expr"]
