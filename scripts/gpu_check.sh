#!/usr/bin/env bash
# Run every GPU-only test and benchmark of covspec in one go, on a machine with an NVIDIA GPU or on a Jetson.
#
#   scripts/gpu_check.sh [RESULTS_DIR]        (default: runs/gpu_check/<UTC time>)
#
# Environment: PYTHON (default .venv/bin/python if present, else python3); REQUIRE_TENSORRT=1 makes a missing
# tensorrt module a failure instead of a warning (its tests then skip).
#
# It says what the machine lacks (GPU, CUDA torch, tensorrt, onnxruntime's CUDA / TensorRT providers), proves
# onnxruntime's CUDA provider by running a tiny model on it against the CPU, on a Jetson describes the board
# (covspec.bundle.jetson) and names the maximum power mode from /etc/nvpmodel.conf by name, runs the
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
    # the maximum mode by name (MAXN_SUPER / MAXN / most watts): mode 0 is 15 W on an Orin Nano/NX Super
    best=$("$PY" - 2>/dev/null <<'PYEOF'
from pathlib import Path
from covspec.bundle.jetson import max_performance_mode, parse_nvpmodel_conf
conf = Path("/etc/nvpmodel.conf")
mode = max_performance_mode(parse_nvpmodel_conf(conf.read_text())) if conf.exists() else None
print(f"{mode.id} {mode.name}" if mode else "")
PYEOF
)
    if [ -n "$best" ]; then
        say "for stable timings run 'sudo nvpmodel -m ${best%% *} && sudo jetson_clocks' first (mode ${best#* }; docs/jetson.md)"
    else
        say "for stable timings pick the MAXN mode by name from /etc/nvpmodel.conf, then 'sudo jetson_clocks' (docs/jetson.md)"
    fi
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


def cuda_inference(ort):
    """Run a tiny MatMul + Relu graph on the CUDA provider and compare it with the CPU: the provider list only says
    what the wheel was built with, and a session whose CUDA libraries fail to load falls back to the CPU silently."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "no CUDAExecutionProvider in this onnxruntime build"
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        return f"cannot build the test model ({exc}); pip install onnx"
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "cuda_check",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [8, 32])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    data = model.SerializeToString()
    x = rng.standard_normal((8, 64)).astype(np.float32)
    try:
        gpu = ort.InferenceSession(data, providers=["CUDAExecutionProvider"])
        if gpu.get_providers()[0] != "CUDAExecutionProvider":
            return f"the session fell back to {gpu.get_providers()} (CUDA libraries not loadable?)"
        cpu = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        got, want = gpu.run(None, {"x": x})[0], cpu.run(None, {"x": x})[0]
    except Exception as exc:  # a CUDA / cuDNN load or launch failure
        return f"failed: {exc}"
    err = float(np.max(np.abs(got - want)))
    return "ok" if err < 1e-2 else f"CUDA result differs from the CPU's by {err:.3g}"


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
    env["onnxruntime_cuda_inference"] = cuda_inference(onnxruntime)
    if env["onnxruntime_cuda_inference"] != "ok":
        env["missing"].append(f"onnxruntime CUDA inference: {env['onnxruntime_cuda_inference']}")
else:
    env["missing"].append("onnxruntime")
if machine == "jetson":
    from pathlib import Path

    from covspec.bundle.jetson import describe_jetson

    def read(path):
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    info = describe_jetson(read("/etc/nv_tegra_release"), read("/proc/device-tree/model"), read("/var/lib/dpkg/status"))
    env["jetson"] = info.to_dict() if info else None
    for note in info.notes if info else ():
        env["missing"].append(note)
keys = ("torch", "tensorrt", "onnxruntime", "gpu", "compute_capability", "onnxruntime_providers")
for key in (*keys, "onnxruntime_cuda_inference", "jetson"):
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
