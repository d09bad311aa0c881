"""The monitor's access token: only its hash is stored in the config, never the token.

``hash_token`` makes the stored form ``scrypt$<salt hex>$<digest hex>``. scrypt (memory-hard,
from the standard library) rather than a bare SHA-256: a config file that leaks then does not
give the token away to a cheap brute force, and the salt keeps two monitors with the same token
from showing the same hash. The token itself is 32 random bytes (``new_token``), far beyond
guessing, so the cost parameters stay modest: one check takes a few milliseconds, and the web
server remembers tokens it has already accepted (:class:`TokenChecker`), so a dashboard that
polls every second does not pay it on every request.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading

SCHEME = "scrypt"
# scrypt cost: N=2**14, r=8, p=1 takes 16 MiB and ~20-50 ms; enough for a random 256-bit token
_N, _R, _P = 2 ** 14, 8, 1
_MAXMEM = 64 * 1024 * 1024


def new_token() -> str:
    """A fresh random token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def _digest(token: str, salt: bytes) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32)


def hash_token(token: str) -> str:
    """The form to store in the config (``token_hash``): ``scrypt$<salt>$<digest>``, hex."""
    if not token:
        raise ValueError("an empty token cannot be hashed: make one with `dfstream monitor-token`")
    salt = secrets.token_bytes(16)
    return f"{SCHEME}${salt.hex()}${_digest(token, salt).hex()}"


def check_hash(stored: str) -> str:
    """``stored`` if it is a hash made by :func:`hash_token`; ValueError naming what is wrong otherwise."""
    parts = stored.split("$") if isinstance(stored, str) else []
    if len(parts) != 3 or parts[0] != SCHEME:
        raise ValueError("token hash is not of the form scrypt$<salt>$<digest>: make one with `dfstream monitor-token`")
    try:
        salt, digest = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        raise ValueError("token hash has a salt or digest that is not hex: make one with `dfstream monitor-token`") from None
    if len(salt) < 8 or len(digest) != 32:
        raise ValueError("token hash has a short salt or a digest that is not 32 bytes: make one with "
                         "`dfstream monitor-token`")
    return stored


def check_token(token: str | None, stored: str) -> bool:
    """Whether ``token`` is the one ``stored`` (a :func:`hash_token` result) was made from.
    Compared in constant time; a missing or empty token is never right."""
    if not token:
        return False
    _, salt_hex, digest_hex = check_hash(stored).split("$")
    return hmac.compare_digest(_digest(token, bytes.fromhex(salt_hex)), bytes.fromhex(digest_hex))


class TokenChecker:
    """:func:`check_token` against one stored hash, remembering the tokens it has accepted
    (in memory only, as their SHA-256) so each request does not pay for scrypt."""

    def __init__(self, stored: str):
        self.stored = check_hash(stored)
        self._accepted: set[bytes] = set()
        self._lock = threading.Lock()

    def __call__(self, token: str | None) -> bool:
        if not token:
            return False
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            if key in self._accepted:
                return True
        if not check_token(token, self.stored):
            return False
        with self._lock:
            self._accepted.add(key)
        return True


def is_loopback(host: str) -> bool:
    """Whether a bind address is reachable only from this host (no token needed there)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (every address): not loopback


def check_web_settings(settings) -> None:
    """ValueError, one line naming the key, for web settings the server must not start with:
    a token hash that is not one, an address other hosts reach with no token, a port that is none.
    ``settings``: anything with ``bind``, ``port`` and ``token_hash``."""
    if settings.token_hash:
        try:
            check_hash(settings.token_hash)
        except ValueError as exc:
            raise ValueError(f"web.token_hash: {exc}") from None
    elif not is_loopback(settings.bind):
        raise ValueError(f"web.bind: {settings.bind} is reachable from other hosts but no token is set: set "
                         "web.token_hash (make one with `dfstream monitor-token`) or bind 127.0.0.1")
    if not 0 <= int(settings.port) <= 65535:
        raise ValueError(f"web.port: {settings.port} is not a port number (0-65535; 0 picks a free one)")
