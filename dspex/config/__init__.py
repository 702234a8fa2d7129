"""Settings: schema, defaults and loading (TOML file, ``DSPEX_*`` environment, kwargs).

Precedence, highest first: keyword arguments > environment > TOML file >
defaults (see ``docs/config.md``). Every bad key or value raises
:class:`~dspex.errors.ConfigError`.

Names load on first use. Settings are plain objects checked without pydantic
when every value is plainly valid; anything else (and ``split_model_id``)
goes through the pydantic schema in ``_settings``, imported then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.config._loading import CONFIG_ENV_VAR, ENV_PREFIX, load_settings
    from dspex.config._model_id import PROVIDERS, model_id_problem
    from dspex.config._secrets import REDACTED, is_secret_key, redact
    from dspex.config._settings import split_model_id
    from dspex.config._values import (
        CacheSettings,
        LMClientSettings,
        ModelSettings,
        RaySettings,
        RuntimeSettings,
        Settings,
        TelemetrySettings,
    )

# public name -> private module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "CONFIG_ENV_VAR": "_loading",
    "ENV_PREFIX": "_loading",
    "load_settings": "_loading",
    "REDACTED": "_secrets",
    "is_secret_key": "_secrets",
    "redact": "_secrets",
    "PROVIDERS": "_model_id",
    "CacheSettings": "_values",
    "LMClientSettings": "_values",
    "ModelSettings": "_values",
    "RaySettings": "_values",
    "RuntimeSettings": "_values",
    "Settings": "_values",
    "TelemetrySettings": "_values",
    "model_id_problem": "_model_id",
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
