"""Bounded fuzzing of a real edge server (issue 11): Hypothesis-generated WebSocket frames and HTTP bodies, and
schemathesis over the app's OpenAPI schema.

Every answer must be a documented one (README "Errors"): an HTTP 4xx whose body is ``{"error": {"code", "message"}}``
with a documented code and its status, or an error frame followed by a 4xxx close; never a 5xx, a 1011 close, a
dropped connection or a hung one. Meanwhile a healthy device generation runs beside the fuzzer over the same server,
again and again, and must produce exactly the target's own greedy tokens each time.

The examples are derandomized (the same inputs every run, no example database) and counted, so `make test` stays
bounded and a failure in CI reproduces here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial, wraps
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response as HTTPResponse
from websockets.sync.client import connect

from covspec.protocol import (
    PROTOCOL_VERSION,
    ErrorFrame,
    Hello,
    OpenRequest,
    SessionSpec,
    VerifyMode,
    decode_downlink,
    encode_open,
)
from covspec.protocol.errors import ERROR_CODES
from covspec.runtime_device.client import EdgeClient
from covspec.runtime_device.loop import GenerationConfig, generate
from covspec.runtime_edge.server import BackgroundServer
from covspec.runtime_edge.settings import EdgeLimits, EdgeSettings
from covspec.spec.policy import PolicyKind
from tests.helpers import PROMPTS, image_bytes, pil


def keep_hypothesis_reports() -> None:
    """Put Hypothesis' example printer back. schemathesis swaps it, process-wide and as soon as its pytest plugin
    loads, for one that prints nothing (its own speed-up), so every failing example would read ``x=,``."""
    from hypothesis import core
    from hypothesis.vendor import pretty
    from schemathesis.generation.hypothesis import setup

    setup()  # schemathesis patches once, then never again
    core.RepresentationPrinter = pretty.RepresentationPrinter


keep_hypothesis_reports()

pytestmark = [
    pytest.mark.e2e,
    # websockets' keepalive pings draw from `random` on the healthy thread while Hypothesis draws on this one
    pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"),
]

ARCH = "llava"  # the cheapest tiny family
KEY = "fuzz-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Small limits, so that generated inputs reach every limit's error, and a valid request stays cheap to serve.
LIMITS = EdgeLimits(
    max_sessions=4096,  # fuzzed opens that succeed (and outlive their connection) never crowd out the healthy one
    session_ttl_s=120,
    max_image_bytes=64 << 10,
    max_image_pixels=256 * 256,
    max_prompt_tokens=512,
    max_prompt_chars=2048,
    max_draft_tokens=8,
    max_burst_tokens=16,
    max_new_tokens=24,
)
HEALTHY_IMAGE, HEALTHY_PROMPT, HEALTHY_TOKENS = image_bytes(5), PROMPTS[3], 16
OPEN_IMAGE = image_bytes(3)  # the image of the valid open a fuzzed frame may follow (and name by sha256)
PROBE = b"\xc1"  # never valid msgpack: whatever the fuzzed frames left open, this gets an error frame and a close
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code
RECV_TIMEOUT_S = 60.0  # a server that does not answer within this has hung

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: CI failures reproduce, runs are comparable
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)
WS_EXAMPLES, SESSION_EXAMPLES, CHAT_EXAMPLES, SCHEMA_EXAMPLES = 400, 250, 250, 200


# ---- the server and the healthy session beside the fuzzer ----------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(tiny_pair, loaded_target) -> Iterator[BackgroundServer]:
    """The suite's own server (an API key, small limits), so fuzzing never disturbs another test's server."""
    settings_ = EdgeSettings(
        target=str(tiny_pair(ARCH).target), port=0, dtype="float64", api_key=KEY, limits=LIMITS, model_name="tiny"
    )
    with BackgroundServer(settings_, loaded_target(ARCH)) as server:
        yield server


@pytest.fixture(scope="module")
def vocab(loaded_target) -> int:
    return loaded_target(ARCH).vocab_size


@pytest.fixture(scope="module")
def healthy(fuzz_server, loaded_target, drafter_engine) -> Callable[[], HealthyTraffic]:
    """``with healthy(): ...`` runs the healthy device generations while the block fuzzes."""
    want = loaded_target(ARCH).generate(pil(HEALTHY_IMAGE), HEALTHY_PROMPT, max_new_tokens=HEALTHY_TOKENS)
    return lambda: HealthyTraffic(fuzz_server.url, drafter_engine(ARCH), want)


@dataclass
class HealthyTraffic:
    """Greedy generations through the real device loop, one after another on one device connection, in a thread while
    a fuzzer runs. Each must equal the target's own greedy output and need no reconnect: bad input on other
    connections must not touch this session. At least one generation always completes."""

    url: str
    engine: Any
    want: list[int]
    results: list[tuple[GenerationConfig, list[int], int]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    CONFIGS = (
        GenerationConfig(
            max_new_tokens=HEALTHY_TOKENS, draft_len=2, verify_mode=VerifyMode.VANILLA, policy=PolicyKind.FIXED
        ),
        GenerationConfig(
            max_new_tokens=HEALTHY_TOKENS, draft_len=3, verify_mode=VerifyMode.DSSD, policy=PolicyKind.MARGIN
        ),
        GenerationConfig(
            max_new_tokens=HEALTHY_TOKENS, draft_len=4, verify_mode=VerifyMode.COMPACT, policy=PolicyKind.COST
        ),
    )

    def _run(self) -> None:
        client = EdgeClient(self.url, api_key=KEY, device_id="healthy-device")
        try:
            while True:
                config = self.CONFIGS[len(self.results) % len(self.CONFIGS)]
                result = generate(self.engine, client, HEALTHY_IMAGE, HEALTHY_PROMPT, config)
                self.results.append((config, result.tokens, result.stats["reconnects"]))
                if self._stop.is_set():
                    return
        except BaseException as exc:  # reported by __exit__ in the test's thread
            self.error = exc
        finally:
            client.close()

    def __enter__(self) -> HealthyTraffic:
        self._thread = threading.Thread(target=self._run, name="healthy-device", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(timeout=120)
        if exc_type is not None:
            return  # the fuzzer's own failure is the one to report
        assert not self._thread.is_alive(), "the healthy generation hung"
        if self.error is not None:
            raise AssertionError(f"the healthy generation failed: {self.error!r}") from self.error
        assert self.results, "no healthy generation ran"
        for config, tokens, reconnects in self.results:
            assert tokens == self.want, f"healthy output changed under fuzzing ({config})"
            assert reconnects == 0, f"the healthy connection was dropped under fuzzing ({config})"


# ---- what every answer must look like ------------------------------------------------------------------------------


def check_http_answer(status: int, headers: Mapping[str, str], body: bytes, what: str) -> str:
    """2xx, or a 4xx with the documented body ``{"error": {"code", "message", ...}}``: a documented code, its status.
    Returns what was answered ("2xx", or the error code), for the test's record of what the fuzzer reached."""
    assert status < 500, f"{what}: HTTP {status} {body[:300]!r}"
    if status < 400:
        return "2xx"
    assert headers.get("content-type", "").startswith("application/json"), f"{what}: {status} {headers} {body[:300]!r}"
    try:
        data = json.loads(body)
    except ValueError:
        raise AssertionError(f"{what}: HTTP {status} body is not JSON: {body[:300]!r}") from None
    assert isinstance(data, dict) and list(data) == ["error"], f"{what}: HTTP {status} undocumented body {data!r:.300}"
    error = data["error"]
    assert isinstance(error, dict), f"{what}: HTTP {status} {data!r:.300}"
    code, message = error.get("code"), error.get("message")
    assert isinstance(code, str) and code in ERROR_CODES, f"{what}: HTTP {status} undocumented code {code!r}"
    assert code != "internal_error", f"{what}: HTTP {status} internal_error: {message!r:.300}"
    assert ERROR_CODES[code].http_status == status, f"{what}: {code} answered with HTTP {status}"
    assert isinstance(message, str) and message, f"{what}: HTTP {status} {code} without a message"
    return code


def check_httpx_answer(response: httpx.Response, what: str) -> str:
    return check_http_answer(response.status_code, response.headers, response.content, what)


@dataclass(frozen=True)
class WsOutcome:
    """What came down a device connection until it closed: the raw frames and the close frame (None if dropped);
    or the HTTP response that refused the handshake."""

    frames: list[bytes | str]
    close: Close | None
    refusal: HTTPResponse | None = None


def ws_exchange(server: BackgroundServer, device: str, headers: dict[str, str], frames: list[bytes | str]) -> WsOutcome:
    """Send ``frames`` then :data:`PROBE` on a fresh ``/v1/connect`` and read until the edge closes."""
    url = server.url.replace("http://", "ws://", 1) + f"/v1/connect?device={quote(device, safe='')}"
    received: list[bytes | str] = []
    try:
        ws = connect(
            url, additional_headers=headers, compression=None, open_timeout=10, close_timeout=10, max_size=None
        )
    except InvalidStatus as refused:
        return WsOutcome([], None, refused.response)
    with ws:
        try:
            for frame in [*frames, PROBE]:
                ws.send(frame)
        except ConnectionClosed:
            pass  # the edge closed on an earlier frame; what it sent is read below
        try:
            while True:
                received.append(ws.recv(timeout=RECV_TIMEOUT_S))
        except ConnectionClosed as closed:
            return WsOutcome(received, closed.rcvd)


def check_ws_outcome(outcome: WsOutcome, vocab: int) -> list[str]:
    """Well-formed frames, ending in a documented error frame and a 4xxx close carrying its code; no 1011, no drop.
    A handshake refused with an HTTP response (a missing API key) must be a documented 4xx. Returns what came down
    (frame types, error codes), for the test's record of what the fuzzer reached."""
    if outcome.refusal is not None:
        refusal = outcome.refusal
        headers = {name.lower(): value for name, value in refusal.headers.raw_items()}
        check_http_answer(refusal.status_code, headers, refusal.body or b"", "WebSocket handshake")
        assert refusal.status_code >= 400, f"handshake answered {refusal.status_code}"
        return ["handshake refused"]
    close = outcome.close
    assert close is not None, "the edge dropped the connection without a close frame"
    assert 4000 <= close.code <= 4999, f"close code {close.code} ({close.reason!r})"
    assert len(close.reason.encode()) <= MAX_CLOSE_REASON_BYTES, f"close reason of {len(close.reason.encode())} bytes"
    decoded = []
    for raw in outcome.frames:
        assert isinstance(raw, bytes), f"a text frame came down: {raw!r:.200}"
        decoded.append(decode_downlink(raw, vocab_size=vocab))  # raises on a frame the device could not read
    assert decoded and isinstance(decoded[-1], ErrorFrame), (
        f"closed {close.code} without an error frame: {decoded!r:.300}"
    )
    assert isinstance(decoded[0], Hello) or len(decoded) == 1, f"the first frame is not hello: {decoded[0]!r:.200}"
    for frame in decoded:
        if isinstance(frame, ErrorFrame):
            assert frame.code in ERROR_CODES, f"undocumented error code {frame.code!r}"
            assert frame.code != "internal_error", f"internal_error: {frame.message!r:.300}"
    assert ERROR_CODES[decoded[-1].code].ws_close == close.code, f"{decoded[-1].code} closed with {close.code}"
    reached = [type(frame).__name__ for frame in decoded[:-1]]
    refused = [f"refused open: {frame.code}" for frame in decoded[:-1] if isinstance(frame, ErrorFrame)]
    return reached + refused + [f"closed: {decoded[-1].code}"]


def check_reached(reached: Counter[str], *needed: str) -> None:
    """The fuzzer got past the validation it fuzzes: a suite whose every input is refused early proves little."""
    missing = [what for what in needed if not reached[what]]
    assert not missing, f"the fuzzer never reached {missing}; it reached {dict(reached)}"


# ---- strategies: values, prompts, images, requests -------------------------------------------------------------


def short_repr(build: Callable[..., st.SearchStrategy[Any]]) -> Callable[..., st.SearchStrategy[Any]]:
    """Wrap a strategy builder so the strategy's repr is one line: Hypothesis prints it when a draw fails, and these
    trees run to megabytes."""

    @wraps(build)
    def deferred(*args: Any, **kwargs: Any) -> st.SearchStrategy[Any]:
        return st.deferred(lambda: build(*args, **kwargs))

    return deferred


INT64 = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
ODD_INTS = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1, 2**63 - 1, 2**64 - 1, -(2**63)]),
    INT64,
)
ODD_FLOATS = st.one_of(
    st.sampled_from([5e-324, -5e-324, 1e-320, 1e-310, 2.2250738585072014e-308, 1e-300, 1e-45, 1e-8, 0.0, -0.0]),
    st.sampled_from([1e308, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"), 100.0, 100.0001]),
    st.floats(),
)
PLACEHOLDERS = (
    "<image>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<fake_token_around_image>",
    "<global-img>", "<row_1_col_1>", "<end_of_utterance>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "</s>",
    "<s>", "<unk>", "<pad>", "USER:", "ASSISTANT:", "{{ raise_exception('x') }}", "{% endfor %}", "\n", "\x00",
)  # fmt: skip
LONG_CHUNKS = "éß漢字🙂\u0301\u200b\u202e\ufeff\U0010fffd"
# Long non-ASCII text: an error message that quotes it must still fit a close frame's 123 bytes.
LONG_TEXT = st.builds(
    lambda chunk, n: chunk * n, st.text(alphabet=LONG_CHUNKS, min_size=1, max_size=3), st.integers(1, 300)
)
LONE_SURROGATES = ("\ud800", "\udfff", "a\ud83d", "\udc00b", "\ud800\ud800")  # only JSON can carry them (escaped)


@short_repr
def prompts(*, surrogates: bool = False) -> st.SearchStrategy[str]:
    """Ordinary prompts, placeholders and special tokens typed as text, long non-ASCII text, prompts around the
    character limit; with ``surrogates``, lone surrogates too (a JSON body carries them as ``\\ud800``)."""
    options = [
        st.sampled_from(PROMPTS),
        st.text(max_size=30),
        st.lists(st.one_of(st.sampled_from(PLACEHOLDERS), st.text(max_size=4)), min_size=1, max_size=6).map("".join),
        st.builds(
            lambda chunk, n: chunk * n, st.text(alphabet=LONG_CHUNKS, min_size=1, max_size=6), st.integers(20, 700)
        ),
        st.builds(
            lambda chunk, n: (chunk * n)[:n],
            st.sampled_from(["a", "ab ", "<image>", "漢"]),
            st.integers(LIMITS.max_prompt_chars - 2, LIMITS.max_prompt_chars + 2),
        ),
    ]
    if surrogates:
        options.append(
            st.lists(st.one_of(st.sampled_from(LONE_SURROGATES), st.text(max_size=3)), max_size=4).map("".join)
        )
    return st.one_of(*options)


@short_repr
def msgpack_values() -> st.SearchStrategy[Any]:
    """Any value msgpack can carry: nested maps with odd keys, ext types, huge ints, odd floats, bytes, long text."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        ODD_INTS,
        ODD_FLOATS,
        st.text(max_size=20),
        LONG_TEXT,
        st.binary(max_size=40),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)),
        st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
    )
    keys = st.one_of(st.text(max_size=6), st.integers(-2, 2), st.binary(max_size=3))
    return st.recursive(
        scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(keys, kids, max_size=4), max_leaves=10
    )


@short_repr
def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, with unbounded ints, NaN/Infinity (Python writes them) and lone surrogates."""
    scalars = st.one_of(st.none(), st.booleans(), ODD_INTS, st.integers(), ODD_FLOATS, prompts(surrogates=True))
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=10,
    )


def picture(shape: tuple[int, int], mode: str, fmt: str) -> bytes:
    """A real picture of ``shape`` (noise, so it does not compress to nothing), saved as ``fmt`` (converted to RGB
    where the format cannot hold ``mode``)."""
    width, height = shape
    rng = np.random.default_rng(width * 7919 + height)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").convert(mode)
    for candidate, form in ((image, fmt), (image.convert("RGB"), fmt), (image.convert("RGB"), "PNG")):
        out = io.BytesIO()
        try:
            candidate.save(out, format=form)
            return out.getvalue()
        except (OSError, ValueError, KeyError, OverflowError):
            continue  # e.g. ICO past 256 pixels a side, GIF past 65535
    raise AssertionError("unreachable: PNG takes any RGB image")


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's header, or a zero side)."""
    data = bytearray(picture((1, 1), "RGB", "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"BM",
    b"\xff\xd8\xff\xe0",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"II*\x00",
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    b"8BPS",
    b"\x00\x00\x01\x00",
    b"P6\n1 1\n255\n",
)


@short_repr
def images() -> st.SearchStrategy[bytes]:
    """Real pictures of odd shapes, modes and formats; truncated ones; headers claiming huge or empty sizes; magic
    bytes followed by garbage; empty and over-limit byte strings."""
    shapes = st.one_of(
        st.tuples(st.integers(1, 48), st.integers(1, 48)),
        st.sampled_from([(1, 1), (1, 2), (2, 1), (1, 4000), (4000, 1), (1, 70000), (70000, 1), (3, 3000), (256, 257)]),
    )
    modes = st.sampled_from(["RGB", "RGBA", "L", "LA", "1", "P", "I", "I;16", "CMYK", "F", "YCbCr", "HSV"])
    formats = st.sampled_from(["PNG", "GIF", "BMP", "JPEG", "WEBP", "TIFF", "ICO", "PPM"])
    real = st.builds(picture, shapes, modes, formats)
    return st.one_of(
        real,
        real,
        real,
        st.builds(lambda data, cut: data[:cut], real, st.integers(0, 300)),
        st.builds(png_claiming, st.sampled_from([0, 1, 70000, 2**31 - 1, 2**32 - 1]), st.sampled_from([0, 1, 70000])),
        st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=64)),
        st.binary(max_size=64),
        st.just(b"\x00" * (LIMITS.max_image_bytes + 1)),
    )


@short_repr
def session_requests(text: st.SearchStrategy[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Session request objects (`SessionSpec.to_dict` shape): valid ones with odd prompts and sampling, wrong types
    and ranges in every field, and arbitrary values."""
    part = st.one_of(
        st.just({"type": "image"}),
        st.builds(lambda t: {"type": "text", "text": t}, text),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["image_url", "text", "image", "video", ""]) | values},
            optional={"text": values, "image_url": values},
        ),
    )
    canonical = st.builds(
        lambda t: [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}], text
    )
    message = st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool"]) | text,
            "content": text | st.lists(part, max_size=4),
        }
    )
    messages = st.one_of(canonical, canonical, st.lists(message, max_size=3), values)
    temperature = st.one_of(st.sampled_from([0, 0.0, 0.7, 1.0, 2.0]), st.floats(0, 100), ODD_FLOATS, values)
    unit = st.one_of(st.sampled_from([1.0, 0.5, 1e-9]), st.floats(0, 1), ODD_FLOATS, values)
    integer = st.one_of(st.integers(0, 50), ODD_INTS, ODD_FLOATS, values)
    sampling = st.one_of(
        st.fixed_dictionaries(
            {}, optional={"temperature": temperature, "top_k": integer, "top_p": unit, "seed": integer}
        ),
        values,
    )
    spec = st.fixed_dictionaries(
        {"messages": messages},
        optional={
            "sampling": sampling,
            "max_new_tokens": st.one_of(st.integers(1, LIMITS.max_new_tokens + 1), integer),
            "verify_mode": st.sampled_from([m.value for m in VerifyMode]) | values,
            "keep_set": st.one_of(
                st.none(), st.lists(st.integers(-1, 20), max_size=6), st.lists(ODD_INTS, max_size=3), values
            ),
            "extra": values,
        },
    )
    return st.one_of(plausible_requests(text), plausible_requests(text), spec, values)


@short_repr
def plausible_requests(text: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Session requests every field of which is in range (odd values included: subnormal temperatures, tiny top_p,
    huge seeds), so that the prompt, the image and the sampling reach the model."""
    sampling = st.fixed_dictionaries(
        {},
        optional={
            "temperature": st.sampled_from([0, 0.0, 0.7, 1.0, 2.0, 100.0, 5e-324, 1e-320, 1e-310, 1e-300, 1e-45]),
            "top_k": st.one_of(st.integers(0, 3), st.sampled_from([1 << 24])),
            "top_p": st.sampled_from([1.0, 0.9, 1e-9, 5e-324, 1e-310]),
            "seed": st.one_of(st.none(), st.integers(0, 2**63 - 1)),
        },
    )
    return st.fixed_dictionaries(
        {
            "messages": st.builds(
                lambda t: [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}], text
            ),
            "max_new_tokens": st.integers(1, LIMITS.max_new_tokens),
        },
        optional={
            "sampling": sampling,
            "verify_mode": st.sampled_from([m.value for m in VerifyMode]),
            "keep_set": st.one_of(st.none(), st.lists(st.integers(0, 20), max_size=6, unique=True)),
        },
    )


# ---- WebSocket frames ----------------------------------------------------------------------------------------------


def _ids(tokens: list[int]) -> bytes:
    return np.asarray(tokens, dtype="<i8").astype("<i4").tobytes()


def _rows(count: int, vocab: int, kind: str) -> bytes:
    """Draft rows (``q``) for ``count`` tokens: uniform, or spoilt one way."""
    rows = np.full((count, vocab), 1.0 / vocab, dtype="<f4")
    if kind == "nan" and count:
        rows[0, 0] = np.nan
    elif kind == "negative" and count:
        rows[-1, -1] = -0.5
    elif kind == "zero":
        rows[:] = 0.0
    data = rows.tobytes()
    return data[:-4] if kind == "short" and data else data


@short_repr
def round_frames(vocab: int, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Round frames: drafts with in- and out-of-vocabulary ids, too long drafts, commits, draft rows and scalars
    that fit or do not, bursts, round numbers old, new and huge; and wrong types in every field."""
    token = st.one_of(st.integers(0, vocab - 1), st.sampled_from([-1, vocab, vocab + 1, 2**31 - 1, -(2**31)]))
    draft = st.lists(token, max_size=LIMITS.max_draft_tokens + 2)

    def frame(ids: list[int]) -> st.SearchStrategy[dict[Any, Any]]:
        k = len(ids)
        q = st.one_of(
            st.sampled_from(["uniform", "nan", "negative", "zero", "short"]).map(partial(_rows, k, vocab)), values
        )
        x = st.one_of(
            st.lists(
                st.sampled_from([1.0, 0.5, 1e-300, 5e-324, 0.0, -1.0, 1.5, float("nan")]), min_size=k, max_size=k
            ).map(lambda v: np.asarray(v, dtype="<f8").tobytes()),
            values,
        )
        return st.fixed_dictionaries(
            {
                "v": st.one_of(st.just(PROTOCOL_VERSION), st.just(PROTOCOL_VERSION), LONG_TEXT, values),
                "t": st.just("round"),
                "n": st.one_of(st.integers(0, 4), ODD_INTS, values),
                "d": st.one_of(st.just(_ids(ids)), st.just(_ids(ids)), st.binary(max_size=20), values),
            },
            optional={
                "c": st.one_of(st.tuples(st.integers(-1, 9), token).map(list), values),
                "q": q,
                "x": x,
                "b": st.one_of(st.integers(0, LIMITS.max_burst_tokens + 2), ODD_INTS, values),
            },
        )

    return draft.flatmap(frame)


@short_repr
def plausible_rounds(vocab: int) -> st.SearchStrategy[dict[str, Any]]:
    """Rounds a live generation may accept (numbered by the caller): drafts of in-vocabulary ids with or without
    uniform draft rows and scalars and a commit, or bursts; so the fuzzer reaches verification, not only decoding."""
    ids = st.lists(st.integers(0, vocab - 1), max_size=LIMITS.max_draft_tokens)

    def draft(tokens: list[int]) -> st.SearchStrategy[dict[str, Any]]:
        k = len(tokens)
        return st.fixed_dictionaries(
            {"v": st.just(PROTOCOL_VERSION), "t": st.just("round"), "d": st.just(_ids(tokens))},
            optional={
                "q": st.just(_rows(k, vocab, "uniform")),
                "x": st.just(np.full(k, 0.5, dtype="<f8").tobytes()),
                "c": st.tuples(st.integers(0, 3), st.integers(0, vocab - 1)).map(list),
            },
        )

    burst = st.fixed_dictionaries(
        {"v": st.just(PROTOCOL_VERSION), "t": st.just("round"), "d": st.just(b""),
         "b": st.integers(1, LIMITS.max_burst_tokens + 1)}
    )  # fmt: skip
    return st.one_of(ids.flatmap(draft), burst)


def numbered(rounds: list[dict[str, Any]], first: int) -> list[bytes]:
    return [msgpack.packb({**frame, "n": first + i}) for i, frame in enumerate(rounds)]


@short_repr
def open_frames(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    """Open frames: fuzzed requests and images, an image or its sha256 (held by the edge or not), wrong types."""
    digests = st.one_of(
        st.just(hashlib.sha256(OPEN_IMAGE).digest()), st.binary(min_size=32, max_size=32), st.binary(max_size=40)
    )
    return st.fixed_dictionaries(
        {
            "v": st.one_of(st.just(PROTOCOL_VERSION), st.just(PROTOCOL_VERSION), LONG_TEXT, values),
            "t": st.just("open"),
            "req": session_requests(prompts(), values),
        },
        optional={
            "n": st.one_of(st.just(0), ODD_INTS),
            "img": st.one_of(images(), images(), values),
            "ih": st.one_of(digests, values),
        },
    )


FRAME_KEYS = ("v", "t", "n", "d", "c", "q", "x", "b", "req", "img", "ih", "s", "info", "code", "msg")
FRAME_TYPES = ("open", "round", "resume", "cancel", "hello", "opened", "verdict", "error", "", "ROUND")


@short_repr
def other_frames(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Resume and cancel frames, downlink types sent up, maps of known keys with random values, non-map values."""
    version = st.one_of(st.just(PROTOCOL_VERSION), LONG_TEXT, values)
    return st.one_of(
        st.fixed_dictionaries(
            {"v": version, "t": st.just("resume"), "n": st.just(0), "s": st.one_of(st.text(max_size=200), values)}
        ),
        st.fixed_dictionaries({"v": version, "t": st.just("cancel")}, optional={"n": values}),
        st.fixed_dictionaries({"v": version, "t": st.one_of(st.sampled_from(FRAME_TYPES), LONG_TEXT, values)}),
        st.dictionaries(st.sampled_from(FRAME_KEYS), values, max_size=6),
        values,
    )


@st.composite
def packed(draw: st.DrawFn, frames: st.SearchStrategy[Any]) -> bytes:
    """A frame packed as msgpack; rarely with bytes packed as (possibly invalid UTF-8) strings."""
    return msgpack.packb(draw(frames), use_bin_type=draw(st.sampled_from([True, True, True, False])))


MSGPACK_ODDITIES = (
    b"\xc7\x05\xff" + bytes(5),  # a timestamp extension of an impossible length
    b"\xd6\xff\xff\xff\xff\xff",  # a valid timestamp where a map belongs
    b"\xdf\xff\xff\xff\xff",  # a map header claiming 2**32 - 1 entries
    b"\xc6\xff\xff\xff\xff",  # a bin header claiming 4 GiB
    b"\x91" * 100_000 + b"\x00",  # arrays nested 100 000 deep
    b"\x81" * 50_000 + b"\x00",  # maps nested 50 000 deep (keys that are maps)
    b"\x83\xa1v\x02\xa1v\x03\xa1t\xa5round",  # a repeated key
    msgpack.packb({"v": PROTOCOL_VERSION, "t": "cancel", "n": 0}) + b"\x00",  # a frame with trailing bytes
)


@short_repr
def ws_messages(vocab: int) -> st.SearchStrategy[bytes | str]:
    """One message a device could send: a packed frame of any kind, raw bytes, odd msgpack, or a text message."""
    values = msgpack_values()
    frames = st.one_of(round_frames(vocab, values), open_frames(values), open_frames(values), other_frames(values))
    return st.one_of(
        packed(frames),
        packed(frames),
        packed(frames),
        packed(frames),
        st.binary(max_size=64),
        st.sampled_from(MSGPACK_ODDITIES),
        st.builds(lambda data, cut: data[:cut], packed(frames), st.integers(0, 40)),
        st.text(max_size=30),
    )


@short_repr
def plausible_opens() -> st.SearchStrategy[bytes]:
    """Well-formed open frames with an in-range request (odd prompts and sampling) and a fuzzed image, so the
    image decoding, the prompt rendering and the prefill are reached."""
    return st.builds(
        lambda request, image: msgpack.packb(
            {"v": PROTOCOL_VERSION, "t": "open", "n": 0, "req": request, "img": image}
        ),
        plausible_requests(prompts()),
        images(),
    )


@short_repr
def valid_opens() -> st.SearchStrategy[bytes]:
    """A valid open frame (its generation is live for the fuzzed frames behind it)."""
    return st.builds(
        lambda mode, temperature: encode_open(
            OpenRequest(SessionSpec(PROMPTS[0], temperature, seed=7, max_new_tokens=8, verify_mode=mode), OPEN_IMAGE)
        ),
        st.sampled_from(list(VerifyMode)),
        st.sampled_from([0.0, 0.8]),
    )


AUTH_HEADERS = st.sampled_from(
    [AUTH] * 24
    + [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer"},
        {"Authorization": f"bearer {KEY}"},
    ]
)


def test_fuzzed_frames_get_documented_answers(fuzz_server, vocab, healthy) -> None:
    """Every sequence of device frames (behind a valid open or not) ends in an error frame and a 4xxx close."""

    reached: Counter[str] = Counter()

    @settings(FUZZ, max_examples=WS_EXAMPLES)
    @given(
        headers=AUTH_HEADERS,
        device=st.one_of(st.just("fuzz-device"), st.text(max_size=20)),
        prefix=st.one_of(st.none(), valid_opens(), valid_opens(), plausible_opens()),
        rounds=st.lists(plausible_rounds(vocab), max_size=4),
        first=st.sampled_from([1, 1, 1, 0, 2]),
        messages=st.lists(ws_messages(vocab), min_size=1, max_size=3),
    )
    def run(
        headers: dict[str, str],
        device: str,
        prefix: bytes | None,
        rounds: list[dict[str, Any]],
        first: int,
        messages: list[bytes | str],
    ) -> None:
        frames = ([prefix] if prefix is not None else []) + numbered(rounds, first) + messages
        reached.update(check_ws_outcome(ws_exchange(fuzz_server, device, headers, frames), vocab))

    with healthy():
        run()
    check_reached(reached, "Opened", "Verdict", "refused open: invalid_image", "closed: malformed_message")


# ---- HTTP bodies ---------------------------------------------------------------------------------------------------


def nested_json(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


NESTED = st.integers(1, 100_000).map(nested_json)


@short_repr
def json_text(values: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """JSON text of ``values`` (lone surrogates escaped, NaN written as Python writes it), deep nesting, garbage."""
    return st.one_of(
        values.map(partial(json.dumps, ensure_ascii=True)),
        values.map(partial(json.dumps, ensure_ascii=True)),
        NESTED,
        st.builds(lambda depth: '{"messages": ' + nested_json(depth, "{}") + "}", st.integers(1, 50_000)),
        st.text(max_size=30),
    )


@dataclass(frozen=True)
class Post:
    """One generated request (httpx keyword arguments) and how to describe it in a failure."""

    kwargs: dict[str, Any]

    def __repr__(self) -> str:
        def short(value: Any) -> str:
            return f"<{len(value)} bytes: {value[:60]!r}>" if isinstance(value, bytes) else repr(value)

        return f"Post({json.dumps(self.kwargs, default=short)[:1500]})"


HUGE_REQUEST = json.dumps(SessionSpec("x" * ((1 << 20) + 16), max_new_tokens=4).to_dict())  # past a form part's 1 MiB


@st.composite
def session_posts(draw: st.DrawFn) -> Post:
    """POST /v1/sessions bodies: multipart forms with a fuzzed request and image, parts missing, repeated or of the
    wrong kind, too many fields or files, a request part over the form parser's size limit; other content types."""
    values = json_values()
    kind = draw(st.sampled_from(["plausible"] * 4 + ["multipart"] * 4 + ["json", "raw"]))
    headers = draw(AUTH_HEADERS)
    if kind == "plausible":  # an in-range request and a fuzzed image: the image decoding and prefill are reached
        request = json.dumps(draw(plausible_requests(prompts(surrogates=True))), ensure_ascii=True).encode()
        image = ("img.png", draw(images()), "image/png")
        return Post({"files": [("request", (None, request, None)), ("image", image)], "headers": AUTH})
    if kind == "json":
        body = draw(json_text(values)).encode("utf-8", "surrogatepass")
        return Post({"content": body, "headers": {**headers, "content-type": "application/json"}})
    if kind == "raw":
        content_type = draw(
            st.sampled_from(
                [
                    "multipart/form-data",
                    "multipart/form-data; boundary=xyz",
                    "multipart/form-data; boundary=",
                    "application/x-www-form-urlencoded",
                    "text/plain",
                    "multipart/mixed; boundary=xyz",
                ]
            )
        )
        body = draw(
            st.one_of(
                st.binary(max_size=200),
                st.just(b'--xyz\r\nContent-Disposition: form-data; name="request"\r\n\r\n{}\r\n--xyz--\r\n'),
            )
        )
        return Post({"content": body, "headers": {**headers, "content-type": content_type}})
    parts: list[tuple[str, tuple[str | None, bytes, str | None]]] = []
    request = draw(
        st.one_of(
            session_requests(prompts(surrogates=True), values).map(partial(json.dumps, ensure_ascii=True)),
            json_text(values),
            st.just(HUGE_REQUEST),
            st.none(),
        )
    )
    if request is not None:
        as_file = draw(st.sampled_from([None, None, None, "request.json"]))
        parts.append(("request", (as_file, request.encode("utf-8", "surrogatepass"), None)))
    image = draw(st.one_of(images(), st.none()))
    if image is not None:
        filename = draw(st.sampled_from(["img.png", "img.png", "", "../../etc/passwd", "漢字.jpg", None]))
        parts.append(
            ("image", (filename, image, draw(st.sampled_from(["image/png", "application/octet-stream", None]))))
        )
    for _ in range(draw(st.integers(0, 6)) if draw(st.booleans()) else 0):  # extra parts: limits on fields and files
        name = draw(st.sampled_from(["image", "request", "extra", ""]))
        parts.append((name, (draw(st.sampled_from([None, "more.png"])), draw(st.binary(max_size=30)), None)))
    order = draw(st.permutations(range(len(parts))))
    return Post({"files": [parts[i] for i in order] or None, "headers": headers})


def test_fuzzed_session_posts_get_documented_answers(fuzz_server, healthy) -> None:
    """POST /v1/sessions answers 2xx (the session is then deleted) or a documented 4xx, never a 5xx."""

    reached: Counter[str] = Counter()

    @settings(FUZZ, max_examples=SESSION_EXAMPLES)
    @given(post=session_posts())
    def run(post: Post) -> None:
        kwargs = dict(post.kwargs)
        if kwargs.get("files") is None:
            kwargs.pop("files", None)
        response = httpx.post(f"{fuzz_server.url}/v1/sessions", timeout=RECV_TIMEOUT_S, **kwargs)
        reached[check_httpx_answer(response, "POST /v1/sessions")] += 1
        if response.status_code < 400:
            session_id = response.json()["session_id"]
            deleted = httpx.delete(f"{fuzz_server.url}/v1/sessions/{session_id}", headers=AUTH, timeout=RECV_TIMEOUT_S)
            assert deleted.status_code == 200, deleted.text

    with healthy():
        run()
    check_reached(reached, "2xx", "invalid_image", "image_too_large", "invalid_request")


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode()


@short_repr
def data_uris() -> st.SearchStrategy[Any]:
    """Image URLs: data URIs of fuzzed images (base64 or not, odd media types), remote URLs, broken base64."""
    media = st.sampled_from(["image/png", "image/jpeg", "text/plain", "", "image/png;charset=utf-8"])
    return st.one_of(
        st.builds(lambda m, data: data_uri(data, m), media, images()),
        st.builds(lambda m, data: data_uri(data, m), media, images()),
        st.builds(lambda m, data: f"data:{m}," + data.hex(), media, images()),
        st.sampled_from(["http://127.0.0.1:1/x.png", "file:///etc/passwd", "data:image/png;base64,!!!", "data:", ""]),
        st.text(max_size=20),
    )


@short_repr
def chat_bodies() -> st.SearchStrategy[str]:
    """POST /v1/chat/completions JSON: a valid-looking request with odd prompts, images and sampling (subnormal
    temperatures, top_p at its bounds, huge top_k), wrong shapes and types; deep nesting; garbage."""
    values = json_values()
    text = prompts(surrogates=True)
    image_part = st.builds(lambda url: {"type": "image_url", "image_url": {"url": url}}, data_uris())
    part = st.one_of(
        image_part,
        st.builds(lambda t: {"type": "text", "text": t}, text),
        st.builds(lambda url: {"type": "image_url", "image_url": url}, data_uris()),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["image", "image_url", "text", "input_audio"]) | values},
            optional={"image_url": values, "text": values},
        ),
    )
    canonical = st.builds(
        lambda image, t: [{"role": "user", "content": [image, {"type": "text", "text": t}]}], image_part, text
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | values},
        optional={"content": st.one_of(text, st.lists(part, max_size=4), values), "name": values},
    )
    messages = st.one_of(canonical, canonical, st.lists(message, max_size=3), values)
    numbers = st.one_of(ODD_FLOATS, ODD_INTS, values)
    plausible = st.fixed_dictionaries(  # in range (odd values included): the image, prompt and sampling reach the model
        {
            "messages": st.builds(
                lambda image, t: [{"role": "user", "content": [image, {"type": "text", "text": t}]}],
                st.builds(lambda data: {"type": "image_url", "image_url": {"url": data_uri(data)}}, images()),
                text,
            ),
            "max_tokens": st.integers(1, LIMITS.max_new_tokens),
        },
        optional={
            "temperature": st.sampled_from([0, 0.0, 0.5, 1.0, 2.0, 5e-324, 1e-320, 1e-310, 1e-45]),
            "top_p": st.sampled_from([1.0, 0.9, 1e-9, 5e-324]),
            "top_k": st.one_of(st.integers(0, 3), st.sampled_from([1 << 24, 2**63])),
            "seed": st.integers(0, 2**64),
            "stream": st.booleans(),
            "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        },
    )
    body = st.fixed_dictionaries(
        {"messages": messages},
        optional={
            "model": st.one_of(st.just("tiny"), values),
            "temperature": st.one_of(st.sampled_from([0, 0.0, 0.5, 1.0, 2.0, 5e-324, 1e-310, 1e-45]), numbers),
            "top_p": st.one_of(st.sampled_from([1.0, 0.9, 1e-9, 5e-324, 0.0]), numbers),
            "top_k": st.one_of(st.integers(0, 1000), numbers),
            "max_tokens": st.one_of(
                st.integers(1, LIMITS.max_new_tokens), st.integers(1, LIMITS.max_new_tokens), numbers
            ),
            "max_completion_tokens": st.one_of(st.integers(0, LIMITS.max_new_tokens + 1), numbers),
            "seed": st.one_of(st.integers(0, 2**64), numbers),
            "n": st.one_of(st.just(1), numbers),
            "stream": st.one_of(st.booleans(), values),
            "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), values),
            "logit_bias": values,
        },
    )
    return st.one_of(
        plausible.map(partial(json.dumps, ensure_ascii=True)),
        plausible.map(partial(json.dumps, ensure_ascii=True)),
        body.map(partial(json.dumps, ensure_ascii=True)),
        body.map(partial(json.dumps, ensure_ascii=True)),
        json_text(values),
    )


def test_fuzzed_chat_completions_get_documented_answers(fuzz_server, healthy) -> None:
    """POST /v1/chat/completions answers a whole completion (a stream that ends in [DONE]) or a documented 4xx."""

    reached: Counter[str] = Counter()

    @settings(FUZZ, max_examples=CHAT_EXAMPLES)
    @given(body=chat_bodies(), headers=AUTH_HEADERS)
    def run(body: str, headers: dict[str, str]) -> None:
        response = httpx.post(
            f"{fuzz_server.url}/v1/chat/completions",
            content=body.encode("utf-8", "surrogatepass"),
            headers={**headers, "content-type": "application/json"},
            timeout=RECV_TIMEOUT_S,
        )
        reached[check_httpx_answer(response, "POST /v1/chat/completions")] += 1
        if response.status_code >= 400:
            return
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            assert response.text.endswith("data: [DONE]\n\n"), f"the stream broke off: {response.text[-300:]!r}"
        else:
            completion = response.json()
            assert completion["object"] == "chat.completion" and len(completion["choices"]) == 1, f"{completion!r:.300}"

    with healthy():
        run()
    check_reached(reached, "2xx", "invalid_image", "invalid_request")


# ---- schemathesis over the OpenAPI schema ---------------------------------------------------------------------------


def test_schemathesis_over_the_openapi_schema(fuzz_server, healthy) -> None:
    """Cases schemathesis derives from the served /openapi.json (valid and invalid ones): no server error, and every
    4xx in the documented error body."""
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json", headers=AUTH, timeout=30)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    reached: Counter[str] = Counter()

    @settings(FUZZ, max_examples=SCHEMA_EXAMPLES)
    @given(case=cases)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=fuzz_server.url, headers=AUTH, timeout=RECV_TIMEOUT_S)
        case.validate_response(response, checks=[not_a_server_error])
        headers = {name.lower(): values[0] for name, values in response.headers.items() if values}
        try:
            answer = check_http_answer(response.status_code, headers, response.content, f"{case.method} {case.path}")
        except AssertionError as exc:  # a schemathesis Case prints as nothing in Hypothesis' report: say what was sent
            raise AssertionError(f"{exc}\nReproduce with: {case.as_curl_command(headers=AUTH)}") from exc
        reached[f"{case.method} {case.path}: {answer}"] += 1

    with healthy():
        run()
    check_reached(reached, "GET /v1/info: 2xx", "POST /v1/chat/completions: invalid_request")
