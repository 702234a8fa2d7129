"""Which names hold secrets, and redaction of values and mappings for logs and errors.

Kept free of pydantic so telemetry and cache-key code can import it cheaply:
a secret value is recognised by duck typing (``get_secret_value``), a secret
key by its words (``api_key``, ``access_token``, ``password``...).
:func:`is_secret_key` is the one secret detector of dspex: settings, telemetry,
cache keys and saved programs all use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "is_secret_path", "redact", "redact_value"]

REDACTED = "**********"
"""What a secret is shown as: the same mask pydantic uses for ``SecretStr``."""

# One detector for every layer: settings, telemetry, cache keys and saved
# programs all ask is_secret_key, so a name is a secret everywhere or nowhere.
# When in doubt a name counts as secret: a false alarm hides a value from a
# log or a cache key, a miss leaks a credential.

# Whole words only (split on anything but letters and digits): "access_token"
# is a secret, "max_tokens" is not.
_SECRET_WORDS = frozenset(
    {"token", "secret", "secrets", "password", "passwd", "authorization", "credential"}
    | {"credentials", "auth", "bearer", "cookie", "cookies", "apikey"}
)
# A "key" is a secret when one of these words qualifies it: "api_key",
# "x-goog-api-key", "Ocp-Apim-Subscription-Key", "AWS_SECRET_ACCESS_KEY",
# "apiKey". A bare "key" or "cache_key" is not.
_KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret", "subscription", "auth"})
_JOINED_KEYS = tuple(f"{q}{sep}key" for q in sorted(_KEY_QUALIFIERS) for sep in ("_", ""))
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")


def is_secret_key(name: str) -> bool:
    """Whether a setting, parameter, header or state entry named ``name`` holds a secret."""
    lowered = name.lower().replace("-", "_")
    words = set(_WORD_SPLIT.split(lowered))
    if words & _SECRET_WORDS:
        return True
    if words & {"key", "keys"} and words & _KEY_QUALIFIERS:
        return True
    return any(joined in lowered for joined in _JOINED_KEYS)


def is_secret_path(path: tuple[str, ...] | list[str]) -> bool:
    """Whether any segment of a dotted setting path names a secret."""
    return any(is_secret_key(str(segment)) for segment in path)


def _is_secret_value(value: object) -> bool:
    return callable(getattr(value, "get_secret_value", None))


def redact_value(path: tuple[str, ...] | list[str], value: Any) -> Any:
    """``value`` with secrets masked: masked whole if ``path`` names a secret."""
    if is_secret_path(path) or _is_secret_value(value):
        return REDACTED
    return redact(value)


def redact(value: Any) -> Any:
    """A copy of ``value`` (mappings, lists, tuples, scalars) safe to log.

    Secret-typed values (``SecretStr``) and the values of secret-named keys are
    replaced by :data:`REDACTED`; everything else is kept as is.
    """
    if _is_secret_value(value):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: REDACTED if is_secret_key(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value
