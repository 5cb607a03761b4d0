#!/usr/bin/env bash
# The end-to-end loop on tiny local checkpoints (what `make demo` runs until the trained demo pair lands):
# build a tiny LLaVA target + drafter, start `covspec serve`, run `covspec run` in each verify mode, stop the server.
set -euo pipefail
work=$(mktemp -d "${TMPDIR:-/tmp}/covspec-demo.XXXXXX")
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

covspec tiny --arch llava --size target --out "$work/target" >/dev/null
covspec tiny --arch llava --size drafter --out "$work/drafter" >/dev/null
python - "$work/scene.png" <<'PY'
import sys
from PIL import Image, ImageDraw
image = Image.new("RGB", (64, 48), (235, 235, 235))
draw = ImageDraw.Draw(image)
draw.ellipse((6, 8, 26, 28), fill=(200, 30, 30))
draw.rectangle((36, 14, 56, 34), fill=(30, 60, 200))
image.save(sys.argv[1])
PY
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
covspec serve --target "$work/target" --port "$port" --log-level warning &
server_pid=$!
for _ in $(seq 1 300); do
  python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
  sleep 0.2
done
echo "tiny random-weight LLaVA pair (acceptance means little on random weights; the trained demo pair comes next)"
for mode in vanilla dssd compact; do
  echo "== verify mode: $mode, K=4"
  covspec run --drafter "$work/drafter" --edge "http://127.0.0.1:$port" --image "$work/scene.png" \
    --prompt "What is in the image?" --max-new-tokens 24 --draft-len 4 --verify-mode "$mode"
done
