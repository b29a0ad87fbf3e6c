"""API keys: where they come from (environment, keys file) and the route dependencies that check them.

A key is ``rw`` (read-write) or ``ro`` (read-only); it is sent as ``X-API-Key`` or ``Authorization:
Bearer KEY`` and compared with every configured key in constant time. An app with no keys allows every
request (:func:`latentsearch.server.serve` refuses to start such an app beyond loopback)."""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path
from typing import Literal

from fastapi import Header, HTTPException, Request

from latentsearch.errors import InvalidInputError

Role = Literal["ro", "rw"]


def load_keys(keys_file: str | os.PathLike[str] | None = None) -> dict[str, Role]:
    """API keys from the environment and an optional file of ``KEY rw|ro`` lines (# comments allowed)."""
    keys: dict[str, Role] = {}
    if os.environ.get("LATENTSEARCH_API_KEY"):
        keys[os.environ["LATENTSEARCH_API_KEY"]] = "rw"
    if os.environ.get("LATENTSEARCH_READ_KEY"):
        keys[os.environ["LATENTSEARCH_READ_KEY"]] = "ro"
    if keys_file is not None:
        try:
            lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read keys file {keys_file}: {exc}") from None
        for number, line in enumerate(lines, 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("rw", "ro") or len(parts[0]) < 16:
                raise InvalidInputError(
                    f"{keys_file} line {number}: expected 'KEY rw' or 'KEY ro' with a key of 16+ characters"
                )
            keys[parts[0]] = parts[1]  # type: ignore[assignment]
    return keys


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def role_of(keys: dict[str, Role], x_api_key: str | None, authorization: str | None) -> Role:
    """The role of the key a request sent (``rw`` when the app has no keys); 401 without a known key."""
    if not keys:
        return "rw"
    given = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
    if not given:
        raise HTTPException(401, "missing API key: send it as X-API-Key or Authorization: Bearer KEY")
    role: Role | None = None
    for key, key_role in keys.items():  # compare with every key, in constant time
        if hmac.compare_digest(key.encode(), given.encode()):
            role = key_role
    if role is None:
        raise HTTPException(401, "unknown API key")
    return role


# The app's keys are in app.state.keys (set by create_app): one pair of dependencies serves every app.
def reader(request: Request, x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> Role:
    """Route dependency: any known key (or none when the app has no keys)."""
    return role_of(request.app.state.keys, x_api_key, authorization)


def writer(request: Request, x_api_key: str | None = Header(None), authorization: str | None = Header(None)) -> Role:
    """Route dependency: a read-write key; 403 for a read-only one."""
    if role_of(request.app.state.keys, x_api_key, authorization) != "rw":
        raise HTTPException(403, "this API key is read-only")
    return "rw"
