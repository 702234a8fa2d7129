"""Settings: schema, defaults and loading (TOML file, ``DSPEX_*`` environment, kwargs).

Precedence, highest first: keyword arguments > environment > TOML file >
defaults (see ``docs/config.md``). Every bad key or value raises
:class:`~dspex.errors.ConfigError`.

Names load on first use, so ``import dspex.config`` does not import pydantic;
``from dspex.config import load_settings`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.config._loading import CONFIG_ENV_VAR, ENV_PREFIX, load_settings
    from dspex.config._secrets import REDACTED, is_secret_key, redact
    from dspex.config._settings import (
        PROVIDERS,
        CacheSettings,
        LMClientSettings,
        ModelSettings,
        RaySettings,
        RuntimeSettings,
        Settings,
        TelemetrySettings,
        model_id_problem,
        split_model_id,
    )

# public name -> private module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "CONFIG_ENV_VAR": "_loading",
    "ENV_PREFIX": "_loading",
    "load_settings": "_loading",
    "REDACTED": "_secrets",
    "is_secret_key": "_secrets",
    "redact": "_secrets",
    "PROVIDERS": "_settings",
    "CacheSettings": "_settings",
    "LMClientSettings": "_settings",
    "ModelSettings": "_settings",
    "RaySettings": "_settings",
    "RuntimeSettings": "_settings",
    "Settings": "_settings",
    "TelemetrySettings": "_settings",
    "model_id_problem": "_settings",
    "split_model_id": "_settings",
}

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "PROVIDERS",
    "REDACTED",
    "CacheSettings",
    "LMClientSettings",
    "ModelSettings",
    "RaySettings",
    "RuntimeSettings",
    "Settings",
    "TelemetrySettings",
    "is_secret_key",
    "load_settings",
    "model_id_problem",
    "redact",
    "split_model_id",
]


__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
