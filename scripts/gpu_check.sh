#!/usr/bin/env bash
# Run every GPU-only test and benchmark of covspec in one go, on a machine with an NVIDIA GPU or on a Jetson.
#
#   scripts/gpu_check.sh [RESULTS_DIR]        (default: runs/gpu_check/<UTC time>)
#
# Environment: PYTHON (default .venv/bin/python if present, else python3); REQUIRE_TENSORRT=1 makes a missing
# tensorrt module a failure instead of a warning (its tests then skip).
#
# It says what the machine lacks (GPU, CUDA torch, tensorrt, onnxruntime's CUDA / TensorRT providers), runs the
# tests marked `gpu` or `tensorrt` (the files that hold such marks, so a module missing elsewhere cannot break the
# collection), and writes under RESULTS_DIR: summary.txt, env.json, nvidia-smi.txt, pytest.log, junit.xml,
# summary.json and the benchmark JSON the tests write (COVSPEC_RESULTS_DIR). Exit status: 0 all passed (skips
# allowed), 1 a test failed or errored, 2 no NVIDIA GPU, 3 tensorrt missing with REQUIRE_TENSORRT=1, 4 no tests.
set -u -o pipefail

cd "$(dirname "$0")/.."
RESULTS=${1:-${RESULTS_DIR:-runs/gpu_check/$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
: >"$RESULTS/summary.txt"
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # works from a bare checkout too
export COVSPEC_RESULTS_DIR="$RESULTS"
export PYTHONUNBUFFERED=1

say() { echo "[gpu_check] $*" | tee -a "$RESULTS/summary.txt"; }

# 1. the GPU ---------------------------------------------------------------------------------------------------
platform=none
if [ -f /etc/nv_tegra_release ]; then
    platform=jetson
    say "Jetson: $(head -n 1 /etc/nv_tegra_release)"
    command -v nvpmodel >/dev/null && say "power mode: $(nvpmodel -q 2>/dev/null | tr '\n' ' ')"
    say "for stable timings run 'sudo nvpmodel -m 0 && sudo jetson_clocks' first (docs/jetson.md)"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    platform=gpu
    nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1
    say "GPU: $(nvidia-smi -L | head -n 1)"
else
    say "MISSING: no NVIDIA GPU (nvidia-smi gives no GPU and /etc/nv_tegra_release is absent); nothing to check"
    exit 2
fi

# 2. the Python environment --------------------------------------------------------------------------------------
say "python: $PY ($($PY --version 2>&1))"
"$PY" - "$RESULTS/env.json" "$platform" <<'PYEOF' 2>&1 | tee -a "$RESULTS/summary.txt"
import importlib, json, platform, sys

out_path, machine = sys.argv[1], sys.argv[2]
env = {"python": sys.version.split()[0], "machine": platform.machine(), "platform": machine, "missing": []}


def version(name):
    try:
        return getattr(importlib.import_module(name), "__version__", "present")
    except Exception as exc:  # ImportError, or a broken CUDA library behind it
        return None if isinstance(exc, ImportError) else f"broken: {exc}"


for name in ("torch", "tensorrt", "onnxruntime", "onnx", "transformers", "cuda.bindings"):
    env[name] = version(name)
hint_trt = (
    "sudo apt install python3-libnvinfer (JetPack), venv with --system-site-packages"
    if machine == "jetson"
    else "pip install tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13)"
)
if env["torch"]:
    import torch

    env["torch_cuda"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
    else:
        env["missing"].append("a CUDA build of torch that sees the GPU (the TensorRT runner's device buffers)")
else:
    env["missing"].append("torch (CUDA build) for the TensorRT runner's device buffers")
if not env["tensorrt"] or str(env["tensorrt"]).startswith("broken"):
    env["missing"].append(f"tensorrt: {hint_trt}")
if env["onnxruntime"]:
    import onnxruntime

    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if provider not in env["onnxruntime_providers"]:
            env["missing"].append(
                f"onnxruntime {provider} (onnxruntime-gpu; on Jetson the Jetson AI Lab build): GPU ORT runs skip"
            )
else:
    env["missing"].append("onnxruntime")
for key in ("torch", "tensorrt", "onnxruntime", "gpu", "compute_capability", "onnxruntime_providers"):
    print(f"[gpu_check] {key}: {env.get(key)}")
for item in env["missing"]:
    print(f"[gpu_check] MISSING: {item}")
json.dump(env, open(out_path, "w"), indent=2)
PYEOF

trt_ok=$("$PY" -c "import tensorrt" >/dev/null 2>&1 && echo 1 || echo 0)
if [ "$trt_ok" = 0 ] && [ "${REQUIRE_TENSORRT:-0}" = 1 ]; then
    say "FAIL: tensorrt is required (REQUIRE_TENSORRT=1) but not importable"
    exit 3
fi

# 3. the GPU tests and benchmarks --------------------------------------------------------------------------------
mapfile -t files < <(grep -rlE "pytest\.mark\.(gpu|tensorrt)|pytestmark = .*(gpu|tensorrt)" tests --include='test_*.py' | sort)
if [ "${#files[@]}" -eq 0 ]; then
    say "FAIL: no test file carries the gpu / tensorrt marks"
    exit 4
fi
say "test files: ${files[*]}"
started=$(date +%s)
"$PY" -m pytest -m "gpu or tensorrt" -ra -v -p no:cacheprovider --junitxml="$RESULTS/junit.xml" "${files[@]}" \
    2>&1 | tee "$RESULTS/pytest.log"
rc=${PIPESTATUS[0]}
elapsed=$(($(date +%s) - started))

"$PY" - "$RESULTS" "$rc" "$elapsed" <<'PYEOF' | tee -a "$RESULTS/summary.txt"
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

results, rc, elapsed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
skips = []
junit = results / "junit.xml"
if junit.exists():
    root = ET.parse(junit).getroot()
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    for case in root.iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            skips.append(f"{case.get('name')}: {skip.get('message', '')}")
benchmarks = {p.name: json.loads(p.read_text()) for p in sorted(results.glob("bench_*.json"))}
summary = {"pytest_exit": rc, "seconds": elapsed, **counts, "skipped_reasons": skips, "benchmarks": benchmarks}
(results / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"[gpu_check] pytest exit {rc} in {elapsed}s: {counts}")
for line in skips:
    print(f"[gpu_check] skipped {line}")
if counts["tests"] and counts["skipped"] == counts["tests"]:
    print("[gpu_check] WARNING: every GPU test skipped (see MISSING above): this run checked nothing on the GPU")
for name, data in benchmarks.items():
    print(f"[gpu_check] benchmark {name}: {json.dumps(data)[:400]}")
PYEOF

if [ "$rc" -eq 5 ]; then
    say "FAIL: pytest collected no gpu / tensorrt test"
    exit 4
elif [ "$rc" -ne 0 ]; then
    say "FAIL: see $RESULTS/pytest.log"
    exit 1
fi
say "OK: results in $RESULTS"
