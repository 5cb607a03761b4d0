"""One exception hierarchy for the whole toolkit.

Each error that can cross the wire carries a stable ``code`` (see ``covspec.protocol.errors``) so the HTTP layer
and the WebSocket layer map it to a status / close code in exactly one place.
"""

from __future__ import annotations


class CovspecError(Exception):
    """Base of every error covspec raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigError(CovspecError):
    """A setting, flag or file the user gave cannot be used."""

    code = "bad_config"


class ModelLoadError(CovspecError):
    """A checkpoint could not be found or is not of a supported family."""

    code = "model_load_failed"


class IncompatiblePairError(CovspecError):
    """Drafter and target cannot be paired (tokenizer or vocabulary differ)."""

    code = "incompatible_pair"


class ProtocolError(CovspecError):
    """A message broke the wire protocol (see ``covspec.protocol.errors`` for the codes)."""

    code = "bad_message"


class LimitError(CovspecError):
    """A documented size or count limit was exceeded."""

    code = "limit_exceeded"


class AuthError(CovspecError):
    """Missing or wrong API key."""

    code = "unauthorized"


class SessionNotFoundError(CovspecError):
    """The session id is unknown or its TTL ran out."""

    code = "unknown_session"


class EdgeError(CovspecError):
    """The edge answered with a documented error, or sent what this device cannot apply (the code says which)."""


class GenerationInterrupted(EdgeError):
    """A generation stopped before its end (the edge unreachable past the reconnect window, or refusing a round).
    ``tokens``/``text``: what was committed until then, the target's own output up to that point; ``code``: the
    cause's."""

    def __init__(self, message: str, *, code: str, tokens: list[int], text: str = "") -> None:
        super().__init__(message, code=code)
        self.tokens = tokens
        self.text = text


class EdgeUnavailableError(CovspecError):
    """The edge server cannot be reached (after the device's retries)."""

    code = "edge_unavailable"


class BundleError(CovspecError):
    """A device bundle is missing a file, was edited after export, or comes from a newer covspec."""

    code = "bad_bundle"


class ExportError(CovspecError):
    """``covspec export`` / ``covspec quantize`` could not produce a bundle (unsupported model, validation past
    tolerance)."""

    code = "export_failed"


class EngineUnavailableError(CovspecError):
    """An engine or execution provider was asked for that this machine lacks (TensorRT, CUDA, a GPU)."""

    code = "engine_unavailable"
