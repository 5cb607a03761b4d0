"""The wire language both sides share: messages, msgpack codec with validation, error codes, version."""

from covspec.protocol.codec import decode_downlink, decode_round, encode_error, encode_round, encode_verdict
from covspec.protocol.errors import ERROR_CODES, ErrorCode, error_code
from covspec.protocol.messages import (
    DEVICE_RNG_STREAM,
    EDGE_RNG_STREAM,
    ErrorFrame,
    RoundRequest,
    SessionSpec,
    Verdict,
    VerifyMode,
    prompt_from_messages,
    session_rng,
)
from covspec.protocol.version import PROTOCOL_VERSION

__all__ = [
    "DEVICE_RNG_STREAM",
    "EDGE_RNG_STREAM",
    "session_rng",
    "ERROR_CODES",
    "ErrorCode",
    "ErrorFrame",
    "PROTOCOL_VERSION",
    "RoundRequest",
    "SessionSpec",
    "Verdict",
    "VerifyMode",
    "decode_downlink",
    "decode_round",
    "encode_error",
    "encode_round",
    "encode_verdict",
    "error_code",
    "prompt_from_messages",
]
