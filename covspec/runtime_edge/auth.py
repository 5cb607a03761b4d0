"""Optional bearer API key; when set it guards every endpoint except /healthz."""

from __future__ import annotations

import secrets

from covspec.errors import AuthError


def check_bearer(expected: str | None, authorization: str | None) -> None:
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    if not secrets.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthError("wrong API key")
