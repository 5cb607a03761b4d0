"""The shared language of both sides loads nothing heavy (DESIGN.md §3, §8)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "onnxruntime", "tensorrt", "fastapi", "typer")

PROBE = """
import json, sys
import {module} as probed
print(json.dumps({{
    "heavy": sorted(name for name in {heavy!r} if name in sys.modules),
    "has_protocol_version": hasattr(probed, "PROTOCOL_VERSION"),
}}))
"""


def _probe(module: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_importing_spec_loads_nothing_heavy() -> None:
    assert _probe("covspec.spec")["heavy"] == []


def test_importing_protocol_loads_nothing_heavy() -> None:
    result = _probe("covspec.protocol")
    assert result["has_protocol_version"], "covspec.protocol must export PROTOCOL_VERSION"
    assert result["heavy"] == []
