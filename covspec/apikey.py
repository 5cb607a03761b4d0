"""API keys from files (both sides read them the same way; keys never go on a command line)."""

from __future__ import annotations

from pathlib import Path

from covspec.errors import ConfigError


def read_api_key_file(path: str | Path) -> str:
    """The key is the file's first line; an empty file is an error, not "no key"."""
    try:
        lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ConfigError(f"the API key file {path} is empty")
    return key
