"""The plain settings values agree with the pydantic schema they skip on the common path.

``dspex.config.Settings`` and its sections check plainly valid values
themselves and hand everything else to the pydantic models of
``dspex.config._settings``; these tests hold the two sides to the same
fields, defaults, coercions and errors.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dspex.config import _settings, _values, load_settings
from dspex.errors import ConfigError

SECTIONS = sorted(_values._PLAIN.values(), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda cls: cls.__name__)
def test_fields_and_defaults_match_the_schema(cls: type[_values._Section]) -> None:
    schema = getattr(_settings, cls.__name__)
    assert list(cls._fields) == list(schema.model_fields)
    assert set(cls._checks) <= set(cls._fields)
    if cls is _values.ModelPrice:  # no defaults: both fields are required
        return
    plain, checked = cls(), _values._plain(schema())
    assert plain == checked
    assert plain.model_fields_set == checked.model_fields_set == set()


# (section, field, value): values the plain checks accept, or refuse to pydantic.
VALUES: list[tuple[type[_values._Section], str, Any]] = [
    (_values.LMClientSettings, "num_retries", 0),
    (_values.LMClientSettings, "num_retries", "7"),
    (_values.LMClientSettings, "num_retries", " 7"),
    (_values.LMClientSettings, "num_retries", 2.0),
    (_values.LMClientSettings, "timeout", 3),
    (_values.LMClientSettings, "timeout", "2.5"),
    (_values.LMClientSettings, "timeout", "1e3"),
    (_values.LMClientSettings, "rpm", None),
    (_values.LMClientSettings, "rpm", "60"),
    (_values.LMClientSettings, "api_base", "http://127.0.0.1:8000/v1/"),
    (_values.LMClientSettings, "transport", "H11"),
    (_values.LMClientSettings, "max_response_bytes", True),
    (_values.CacheSettings, "enabled", "true"),
    (_values.CacheSettings, "enabled", "FALSE"),
    (_values.CacheSettings, "enabled", "yes"),
    (_values.CacheSettings, "enabled", 1),
    (_values.CacheSettings, "dir", "~/somewhere"),
    (_values.CacheSettings, "dir", Path("/tmp/x")),
    (_values.TelemetrySettings, "format", "JSON"),
    (_values.TelemetrySettings, "level", "Debug"),
    (_values.RuntimeSettings, "backend", "Ray"),
    (_values.RuntimeSettings, "ray", {"address": "auto", "workers": "2"}),
    (_values.BudgetSettings, "max_cost_usd", 5),
    (_values.Settings, "lm", "openai/gpt-4o-mini"),
    (_values.Settings, "temperature", 0),
    (_values.Settings, "temperature", "2"),
    (_values.Settings, "adapter", "XML"),
    (_values.Settings, "models", {}),
    (_values.Settings, "models", {"openai/a": {"rpm": "3"}}),
    (_values.Settings, "cache", {"dir": "/tmp/y", "memory_max_entries": "10"}),
]


@pytest.mark.parametrize(("cls", "name", "value"), VALUES)
def test_a_value_gets_the_schemas_result_on_either_path(
    cls: type[_values._Section], name: str, value: Any
) -> None:
    schema = getattr(_settings, cls.__name__)
    expected = _values._plain(schema(**{name: value}))
    got = cls(**{name: value})
    assert type(got) is cls
    assert getattr(got, name) == getattr(expected, name)
    assert type(getattr(got, name)) is type(getattr(expected, name))
    assert got == expected and got.model_fields_set == {name}


BAD: list[tuple[type[_values._Section], dict[str, Any]]] = [
    (_values.LMClientSettings, {"num_retries": -1}),
    (_values.LMClientSettings, {"backoff_base": 2.0, "backoff_max": 1.0}),
    (_values.LMClientSettings, {"api_base": "127.0.0.1:8000"}),
    (_values.CacheSettings, {"memory_max_entries": "lots"}),
    (_values.CacheSettings, {"dirr": "/tmp"}),
    (_values.TelemetrySettings, {"format": "yaml"}),
    (_values.Settings, {"lm": "gpt-4o"}),
    (_values.Settings, {"temperature": 3}),
    (_values.Settings, {"cache": {"enabled": "maybe"}, "runtime": {"max_runs": 0}}),
]


@pytest.mark.parametrize(("cls", "data"), BAD)
def test_a_bad_value_gets_the_schemas_error(
    cls: type[_values._Section], data: dict[str, Any]
) -> None:
    schema = getattr(_settings, cls.__name__)
    with pytest.raises(ConfigError) as plain:
        cls(**data)
    with pytest.raises(ConfigError) as checked:
        schema(**data)
    assert str(plain.value) == str(checked.value)
    assert plain.value.key == checked.value.key


def test_values_are_frozen_picklable_and_copyable() -> None:
    settings = _values.Settings(cache={"dir": "/tmp/z"}, runtime={"max_runs": 3})
    with pytest.raises(ConfigError, match=r"settings.merged\(cache=\{\"dir\": ...\}\)"):
        settings.cache.dir = Path("/elsewhere")  # type: ignore[misc]
    copied = pickle.loads(pickle.dumps(settings))
    assert copied == settings and copied.runtime.model_fields_set == {"max_runs"}
    merged = settings.merged(runtime={"warm_runs": 2})
    assert merged.runtime.max_runs == 3 and merged.runtime.warm_runs == 2
    assert merged.cache is settings.cache or merged.cache == settings.cache
    assert settings.model_dump(mode="json")["cache"]["dir"] == "/tmp/z"


def _child(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    return result.stdout.strip()


def test_plain_settings_from_the_environment_do_not_import_pydantic(tmp_path: Path) -> None:
    code = (
        "import sys; from dspex.config import load_settings; s = load_settings(); "
        "print(s.runtime.max_runs, s.cache.dir, s.telemetry.format, 'pydantic' in sys.modules)"
    )
    env = {
        "DSPEX_RUNTIME__MAX_RUNS": "8",
        "DSPEX_CACHE__DIR": str(tmp_path),
        "DSPEX_TELEMETRY__FORMAT": "OFF",
    }
    assert _child(code, env) == f"8 {tmp_path} off False"


def test_a_doubtful_value_still_loads_through_the_schema() -> None:
    settings = load_settings(env={"DSPEX_LM_CLIENT__TIMEOUT": "1e2"})
    assert settings.lm_client.timeout == 100.0
    with pytest.raises(ConfigError, match="DSPEX_LM_CLIENT__TIMEOUT"):
        load_settings(env={"DSPEX_LM_CLIENT__TIMEOUT": "soon"})
