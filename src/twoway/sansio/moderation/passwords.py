"""Password hashes: ``hashlib.scrypt`` (memory-hard, in the standard library) as PHC strings.

``$scrypt$ln=14,r=8,p=1$SALT$HASH`` (base64 without padding): ``2**14`` iterations with
``r=8`` take ~16 MiB and ~50 ms, so the caller runs :func:`hash_password` and
:func:`verify_password` in a thread, never on the event loop. The salt is passed in (this
package has no randomness of its own): 16 bytes from ``os.urandom``.

Why scrypt rather than argon2: it is in the standard library (no compiled dependency) and
memory-hard, which is what makes GPU guessing expensive; the PHC string keeps its parameters,
so a hash made today still verifies if the defaults grow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = ["SCRYPT_LN", "hash_password", "is_password_hash", "verify_password"]

#: log2 of scrypt's cost N (OWASP's minimum is N = 2**17 with r = 8 for a login a second;
#: a chat verifies at most a few a second and 2**14 keeps one check near 50 ms).
SCRYPT_LN = 14
_R = 8
_P = 1
_PHC = re.compile(
    r"\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n * p + 1024 * 1024
    )


def hash_password(password: str, salt: bytes, *, ln: int = SCRYPT_LN) -> str:
    """The PHC string of ``password`` with ``salt`` (16 random bytes)."""
    return f"$scrypt$ln={ln},r={_R},p={_P}${_b64(salt)}${_b64(_scrypt(password, salt, ln, _R, _P))}"


def is_password_hash(text: str) -> bool:
    """Whether ``text`` is a hash :func:`hash_password` makes."""
    return _PHC.fullmatch(text) is not None


def verify_password(password: str, phc: str) -> bool:
    """Whether ``password`` is the one ``phc`` was made from (False for a malformed hash)."""
    m = _PHC.fullmatch(phc)
    if m is None:
        return False
    ln, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 4):
        return False
    expected = _unb64(m.group(5))
    return hmac.compare_digest(_scrypt(password, _unb64(m.group(4)), ln, r, p), expected)
