"""dspex.config: schema defaults, the three sources and their precedence, errors, secrets."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

import dspex.config as config
from dspex.config import (
    CacheSettings,
    ModelSettings,
    Settings,
    is_secret_key,
    load_settings,
    redact,
    split_model_id,
)
from dspex.config._explain import env_var_name
from dspex.errors import ConfigError, UsageError

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "sk-SENTINEL-do-not-leak-7f3a"


def write_toml(tmp_path: Path, text: str, name: str = "dspex.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def all_text(err: BaseException) -> str:
    """Everything an error could show: message, attributes and its cause."""
    parts = [str(err), repr(err), repr(getattr(err, "value", None)), str(err.__cause__)]
    parts.append(repr(err.__cause__))
    return "\n".join(parts)


# -- defaults ------------------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings()
    assert (s.lm, s.adapter, s.temperature, s.max_tokens, s.track_usage) == (
        None,
        None,
        None,
        None,
        False,
    )
    assert s.lm_client.num_retries == 3
    assert s.lm_client.timeout == 60.0
    assert (s.lm_client.backoff_base, s.lm_client.backoff_max) == (0.25, 30.0)
    assert (s.lm_client.rpm, s.lm_client.tpm, s.lm_client.api_base) == (None, None, None)
    assert s.lm_client.breaker_failure_threshold == 5
    assert s.lm_client.breaker_reset_timeout == 30.0
    assert s.lm_client.max_in_flight == 512
    assert (s.lm_client.transport, s.lm_client.max_response_bytes) == ("auto", 32 << 20)
    assert s.models == {}
    assert s.cache.enabled and s.cache.disk_enabled and s.cache.memory_enabled
    assert s.cache.dir == Path.home() / ".dspex_cache"
    assert s.cache.memory_max_entries == 100_000
    assert s.cache.disk_max_bytes == 1 << 30
    assert (s.telemetry.format, s.telemetry.level) == ("console", "warning")
    assert (s.telemetry.history_size, s.telemetry.latency_window) == (200, 1024)
    assert s.runtime.max_runs == 1024
    assert s.runtime.max_restarts == 3 and s.runtime.max_seconds == 5.0
    assert s.runtime.run_start_timeout > 0 and s.runtime.shutdown_timeout > 0


def test_load_with_no_sources_gives_defaults() -> None:
    assert load_settings(env={}) == Settings()


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ConfigError, match=r"cache\.dir cannot be assigned") as info:
        s.cache.dir = Path("/elsewhere")
    assert 'merged(cache={"dir": ...})' in str(info.value)
    with pytest.raises(ConfigError, match="merged"):
        s.lm = "openai/x"
    assert s.lm is None


def test_settings_survive_pickle_and_equality() -> None:
    s = load_settings(env={}, lm="openai/gpt-4o-mini", models={"openai/x": {"api_key": "k"}})
    assert pickle.loads(pickle.dumps(s)) == s


def test_cache_dir_expands_user() -> None:
    s = load_settings(env={}, cache={"dir": "~/somewhere"})
    assert s.cache.dir == Path.home() / "somewhere"


def test_case_insensitive_choices() -> None:
    s = load_settings(env={}, adapter="JSON", telemetry={"format": "Json", "level": "INFO"})
    assert (s.adapter, s.telemetry.format, s.telemetry.level) == ("json", "json", "info")


# -- each source alone ----------------------------------------------------------------------


def test_toml_alone(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        lm = "anthropic/claude-3-5-haiku"
        temperature = 0.3
        adapter = "json"

        [lm_client]
        num_retries = 7
        api_base = "http://127.0.0.1:8000/v1/"

        [cache]
        dir = "/tmp/dspex-test-cache"
        disk_enabled = false

        [telemetry]
        format = "json"

        [runtime]
        max_runs = 16

        [models."openai/gpt-4o-mini"]
        rpm = 100
        params = { top_p = 0.9 }
        """,
    )
    s = load_settings(path, env={})
    assert s.lm == "anthropic/claude-3-5-haiku"
    assert (s.temperature, s.adapter) == (0.3, "json")
    assert s.lm_client.num_retries == 7
    assert s.lm_client.api_base == "http://127.0.0.1:8000/v1"  # trailing slash dropped
    assert s.cache.dir == Path("/tmp/dspex-test-cache") and s.cache.disk_enabled is False
    assert s.telemetry.format == "json"
    assert s.runtime.max_runs == 16
    assert s.models["openai/gpt-4o-mini"].rpm == 100
    assert s.models["openai/gpt-4o-mini"].params == {"top_p": 0.9}


def test_toml_path_as_str_and_from_dspex_config(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'lm = "gemini/gemini-2.0-flash"\n')
    assert load_settings(str(path), env={}).lm == "gemini/gemini-2.0-flash"
    assert load_settings(env={"DSPEX_CONFIG": str(path)}).lm == "gemini/gemini-2.0-flash"


def test_env_alone() -> None:
    env = {
        "DSPEX_LM": "openai/gpt-4o-mini",
        "DSPEX_TEMPERATURE": "0.7",
        "DSPEX_MAX_TOKENS": "256",
        "DSPEX_TRACK_USAGE": "true",
        "DSPEX_ADAPTER": "xml",
        "DSPEX_CACHE__DIR": "/tmp/env-cache",
        "DSPEX_CACHE__ENABLED": "false",
        "DSPEX_LM_CLIENT__NUM_RETRIES": "5",
        "DSPEX_LM_CLIENT__RPM": "null",
        "DSPEX_LM_CLIENT__TIMEOUT": "2.5",
        "DSPEX_TELEMETRY__HISTORY_SIZE": "10",
        "DSPEX_MODELS": json.dumps({"openai/gpt-4o-mini": {"tpm": 1000, "params": {"seed": 1}}}),
        "HOME_NOT_OURS": "ignored",
        "DSPEXTRA": "ignored too",
    }
    s = load_settings(env=env)
    assert s.lm == "openai/gpt-4o-mini"
    assert (s.temperature, s.max_tokens, s.track_usage, s.adapter) == (0.7, 256, True, "xml")
    assert s.cache.dir == Path("/tmp/env-cache") and s.cache.enabled is False
    assert (s.lm_client.num_retries, s.lm_client.rpm, s.lm_client.timeout) == (5, None, 2.5)
    assert s.telemetry.history_size == 10
    assert s.models["openai/gpt-4o-mini"].tpm == 1000
    assert s.models["openai/gpt-4o-mini"].params == {"seed": 1}


def test_env_json_group_and_specific_variable() -> None:
    env = {
        "DSPEX_CACHE": '{"dir": "/from/json", "memory_max_entries": 5}',
        "DSPEX_CACHE__DIR": "/from/specific",
    }
    s = load_settings(env=env)
    assert s.cache.dir == Path("/from/specific")  # the more specific variable wins
    assert s.cache.memory_max_entries == 5


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_RUNTIME__MAX_RUNS", "33")
    assert load_settings().runtime.max_runs == 33


def test_kwargs_alone() -> None:
    s = load_settings(
        env={},
        lm="local/smollm2",
        temperature=1.5,
        cache={"memory_max_entries": 10},
        lm_client={"breaker_failure_threshold": 2},
        models={"openai/gpt-4o": {"timeout": 9}},
    )
    assert s.lm == "local/smollm2" and s.temperature == 1.5
    assert s.cache.memory_max_entries == 10
    assert s.lm_client.breaker_failure_threshold == 2
    assert s.models["openai/gpt-4o"].timeout == 9


def test_kwargs_accept_sub_models_with_only_their_set_fields(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[cache]\nmemory_max_entries = 3\n")
    s = load_settings(path, env={}, cache=CacheSettings(dir=Path("/sub/model")))
    assert s.cache.dir == Path("/sub/model")
    assert s.cache.memory_max_entries == 3  # not reset to the default by the sub-model


# -- precedence and deep merge --------------------------------------------------------------


@pytest.fixture
def three_sources(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = write_toml(
        tmp_path,
        """
        temperature = 0.1
        max_tokens = 11

        [cache]
        memory_max_entries = 111
        disk_max_bytes = 1111
        dir = "/from/toml"

        [models."openai/gpt-4o-mini"]
        rpm = 1
        tpm = 1
        timeout = 1
        """,
    )
    env = {
        "DSPEX_TEMPERATURE": "0.2",
        "DSPEX_CACHE__MEMORY_MAX_ENTRIES": "222",
        "DSPEX_CACHE__DISK_MAX_BYTES": "2222",
        "DSPEX_MODELS": '{"openai/gpt-4o-mini": {"rpm": 2, "tpm": 2}}',
    }
    return path, env


def test_precedence_kwargs_over_env_over_toml_over_defaults(
    three_sources: tuple[Path, dict[str, str]],
) -> None:
    path, env = three_sources
    s = load_settings(
        path,
        env=env,
        temperature=0.3,
        cache={"memory_max_entries": 333},
        models={"openai/gpt-4o-mini": {"rpm": 3}},
    )
    assert s.temperature == 0.3  # kwargs > env > toml
    assert s.max_tokens == 11  # toml > default
    assert s.cache.memory_max_entries == 333  # nested: kwargs win
    assert s.cache.disk_max_bytes == 2222  # nested: env > toml
    assert s.cache.dir == Path("/from/toml")  # nested: toml > default
    assert s.cache.enabled is True  # default
    model = s.models["openai/gpt-4o-mini"]
    assert (model.rpm, model.tpm, model.timeout) == (3, 2, 1)  # each from its own source


def test_precedence_without_kwargs(three_sources: tuple[Path, dict[str, str]]) -> None:
    path, env = three_sources
    s = load_settings(path, env=env)
    assert (s.temperature, s.cache.memory_max_entries) == (0.2, 222)
    assert load_settings(path, env={}).temperature == 0.1


def test_none_is_a_value_not_unset(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "temperature = 0.5\n")
    assert load_settings(path, env={}, temperature=None).temperature is None
    assert load_settings(path, env={"DSPEX_TEMPERATURE": ""}).temperature is None


def test_kwargs_do_not_mutate_inputs() -> None:
    cache = {"dir": "/x"}
    load_settings(env={}, cache=cache)
    assert cache == {"dir": "/x"}


# -- merged ---------------------------------------------------------------------------------


def test_merged_overrides_and_revalidates() -> None:
    base = load_settings(env={}, lm="openai/gpt-4o-mini", cache={"dir": "/base"})
    new = base.merged(temperature=0.9, cache={"enabled": False})
    assert new is not base
    assert (new.temperature, new.cache.enabled, new.cache.dir) == (0.9, False, Path("/base"))
    assert new.lm == "openai/gpt-4o-mini"
    assert base.temperature is None and base.cache.enabled is True  # original untouched
    assert new.runtime is base.runtime  # untouched groups are reused, not rebuilt


def test_merged_without_overrides_is_identity() -> None:
    s = Settings()
    assert s.merged() is s


def test_merged_deep_merges_models_and_sub_models() -> None:
    base = load_settings(env={}, models={"openai/a": {"rpm": 1, "params": {"top_p": 0.5}}})
    new = base.merged(
        models={"openai/a": {"params": {"seed": 3}}, "anthropic/b": ModelSettings(tpm=9)}
    )
    assert new.models["openai/a"].rpm == 1
    assert new.models["openai/a"].params == {"top_p": 0.5, "seed": 3}
    assert new.models["anthropic/b"].tpm == 9
    assert set(base.models) == {"openai/a"}


def test_merged_rejects_bad_values() -> None:
    with pytest.raises(ConfigError) as info:
        Settings().merged(temperature=2.5)
    assert info.value.key == "temperature" and info.value.value == 2.5
    assert "temperature = 2.5" in str(info.value) and "<= 2" in str(info.value)
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings().merged(temprature=0.5)


def test_lm_client_for_applies_model_overrides() -> None:
    s = load_settings(
        env={},
        lm_client={"timeout": 10, "rpm": 60},
        models={"openai/fast": {"timeout": 2, "api_base": "http://127.0.0.1:9/v1"}},
    )
    client = s.lm_client_for("openai/fast")
    assert (client.timeout, client.rpm, client.api_base) == (2, 60, "http://127.0.0.1:9/v1")
    assert s.lm_client_for("openai/other") is s.lm_client


# -- errors ---------------------------------------------------------------------------------


def test_config_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        load_settings(env={}, max_tokens=0)


def test_unknown_top_level_key_suggests_closest() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, temprature=0.5)
    err = info.value
    assert err.key == "temprature" and err.value == 0.5
    assert "unknown setting" in str(err) and "Did you mean temperature?" in str(err)
    assert "Valid keys at the top level" in str(err)


def test_flat_env_name_suggests_nested_one() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DSPEX_CACHE_DIR": "/x"})
    message = str(info.value)
    assert "environment variable DSPEX_CACHE_DIR" in message
    assert "Did you mean cache.dir (DSPEX_CACHE__DIR)?" in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[cache]\nmemory_max_entires = 5\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    err = info.value
    assert err.key == "cache.memory_max_entires"
    assert f"file {path}" in str(err)
    assert "Did you mean cache.memory_max_entries?" in str(err)
    assert "Valid keys in [cache]" in str(err)


def test_unknown_key_in_a_model_table() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, models={"openai/x": {"rmp": 5}})
    assert info.value.key == 'models."openai/x".rmp'
    assert 'Did you mean models."openai/x".rpm?' in str(info.value)


def test_wrong_type() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, max_tokens="many")
    err = info.value
    assert err.key == "max_tokens" and err.value == "many"
    assert "must be an integer" in str(err) and "(from keyword argument)" in str(err)
    with pytest.raises(ConfigError, match="cache = 5: must be a table of settings"):
        load_settings(env={}, cache=5)


def test_out_of_range_message_names_key_value_source_and_fix() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DSPEX_CACHE__MEMORY_MAX_ENTRIES": "-5"})
    err = info.value
    assert err.key == "cache.memory_max_entries" and err.value == "-5"
    assert str(err) == (
        "cache.memory_max_entries = '-5': must be a positive integer "
        "(from environment variable DSPEX_CACHE__MEMORY_MAX_ENTRIES). "
        "Set DSPEX_CACHE__MEMORY_MAX_ENTRIES or [cache] memory_max_entries in dspex.toml "
        "to a value >= 1."
    )


def test_out_of_range_from_file_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[lm_client]\ntimeout = 0\n", name="svc.toml")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert info.value.key == "lm_client.timeout"
    assert f"(from file {path})" in message
    assert f"[lm_client] timeout in {path} to a value > 0" in message


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"lm_client": {"num_retries": -1}}, "lm_client.num_retries"),
        ({"lm_client": {"backoff_base": 2, "backoff_max": 1}}, "lm_client.backoff_max"),
        ({"lm_client": {"api_base": "127.0.0.1:8000"}}, "lm_client.api_base"),
        ({"lm_client": {"transport": "curl"}}, "lm_client.transport"),
        ({"lm_client": {"max_response_bytes": 0}}, "lm_client.max_response_bytes"),
        ({"runtime": {"max_runs": 0}}, "runtime.max_runs"),
        ({"telemetry": {"format": "yaml"}}, "telemetry.format"),
        ({"adapter": "two-step"}, "adapter"),
        ({"track_usage": "maybe"}, "track_usage"),
    ],
)
def test_bad_values_name_their_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, **overrides)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key} = ")


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("gpt-4o-mini", "did you mean 'openai/gpt-4o-mini'?"),
        ("claude-3-5-sonnet", "did you mean 'anthropic/claude-3-5-sonnet'?"),
        ("opnai/gpt-4o", "did you mean 'openai/gpt-4o'?"),
        ("ollama_chat/llama3", "use 'openai/llama3' and set api_base"),
        ("openai/", "provider/name"),
        ("openai/gpt 4", "provider/name"),
    ],
)
def test_bad_model_id(model: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, lm=model)
    assert info.value.key == "lm" and info.value.value == model
    assert hint in str(info.value)
    assert "anthropic, gemini, local, openai" in str(info.value)


def test_bad_model_id_as_models_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, models={"gpt4": {"rpm": 1}})
    assert info.value.key == "models.gpt4" and info.value.value == "gpt4"
    assert "Rename it to a model id like 'openai/gpt-4o-mini'" in str(info.value)


def test_split_model_id() -> None:
    assert split_model_id("openai/meta-llama/Llama-3-8B") == ("openai", "meta-llama/Llama-3-8B")
    with pytest.raises(ValueError, match="provider/name"):
        split_model_id("nope")


def test_several_problems_are_all_listed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, adapter="yaml", max_tokens=-1)
    message = str(info.value)
    assert info.value.key == "adapter"
    assert "Also 1 more problem(s)" in message and "max_tokens = -1" in message


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'lm = "openai/gpt-4o-mini"\n\n[cache]\ndir = /no/quotes\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert str(path) in message and "at line 4" in message and "not valid TOML" in message
    assert info.value.key == "config"


def test_a_config_file_nested_too_deeply_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "lm = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in str(info.value) and "more deeply than Python can read" in str(info.value)
    assert info.value.key == "config"


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(missing, env={})
    assert str(missing) in str(info.value) and info.value.value == str(missing)
    with pytest.raises(ConfigError, match="named by DSPEX_CONFIG"):
        load_settings(env={"DSPEX_CONFIG": str(missing)})


def test_directory_as_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path, env={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DSPEX_LM_CLIENT__NUM_RETRIES": "three"})
    err = info.value
    assert err.key == "lm_client.num_retries" and err.value == "three"
    assert "environment variable DSPEX_LM_CLIENT__NUM_RETRIES" in str(err)
    assert "must be an integer" in str(err)


def test_bad_env_json_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DSPEX_CACHE": "{dir: /x}"})
    assert "environment variable DSPEX_CACHE is not valid JSON" in str(info.value)
    assert info.value.key == "cache"


def test_bad_env_name() -> None:
    with pytest.raises(ConfigError, match="DSPEX_CACHE__ is not a setting name"):
        load_settings(env={"DSPEX_CACHE__": "1"})


def test_validation_error_is_the_cause() -> None:
    from pydantic import ValidationError

    with pytest.raises(ConfigError) as info:
        Settings(max_tokens=0)
    assert isinstance(info.value.__cause__, ValidationError)
    with pytest.raises(ConfigError) as sub:
        CacheSettings(memory_max_entries=0)
    assert sub.value.key == "cache.memory_max_entries"


# -- secrets --------------------------------------------------------------------------------


def _secret_settings(tmp_path: Path) -> list[Settings]:
    path = write_toml(tmp_path, f'[models."openai/a"]\napi_key = "{SENTINEL}"\n')
    env = {"DSPEX_MODELS": json.dumps({"anthropic/b": {"api_key": SENTINEL}})}
    return [
        load_settings(path, env={}),
        load_settings(env=env),
        load_settings(env={}, models={"gemini/c": {"api_key": SENTINEL}}),
        Settings().merged(models={"gemini/c": ModelSettings(api_key=SecretStr(SENTINEL))}),
    ]


def test_secrets_never_in_repr_str_or_dumps(tmp_path: Path) -> None:
    for s in _secret_settings(tmp_path):
        (model,) = s.models.values()
        assert model.api_key is not None and model.api_key.get_secret_value() == SENTINEL
        shown = [
            repr(s),
            str(s),
            repr(model),
            s.model_dump_json(),
            json.dumps(s.model_dump(mode="json")),
            json.dumps(s.public_dict()),
            str(s.model_dump()),
        ]
        for text in shown:
            assert SENTINEL not in text
        assert "**********" in json.dumps(s.public_dict())


def test_secrets_never_in_error_messages(tmp_path: Path) -> None:
    not_a_string: dict[str, Any] = {"api_key": [SENTINEL]}
    attempts: list[Callable[[], object]] = [
        lambda: load_settings(env={}, models={"openai/a": {"api_key": SENTINEL, "rpm": 0}}),
        lambda: load_settings(env={}, models={"openai/a": {"api_key": SENTINEL, "nope": 1}}),
        lambda: load_settings(env={}, models={"openai/a": {"apikey": SENTINEL}}),
        lambda: load_settings(env={}, api_key=SENTINEL),
        lambda: load_settings(env={}, models={"openai/a": SENTINEL}),
        lambda: load_settings(env={}, models={"openai/a": {"params": {"auth_token": SENTINEL}}}),
        lambda: load_settings(env={"DSPEX_MODELS": '{"openai/a": {"api_key": "' + SENTINEL}),
        lambda: load_settings(
            write_toml(tmp_path, f'[models."openai/a"]\napi_key = "{SENTINEL}"\nrpm = "x"\n'),
            env={},
        ),
        lambda: ModelSettings(**not_a_string),
        lambda: setattr(ModelSettings(), "api_key", SENTINEL),
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError) as info:
            attempt()
        assert SENTINEL not in all_text(info.value)


def test_secret_in_params_is_rejected() -> None:
    with pytest.raises(ConfigError, match="looks like a secret") as info:
        load_settings(env={}, models={"openai/a": {"params": {"x-api-key": SENTINEL}}})
    assert info.value.key == 'models."openai/a".params'


def test_is_secret_key_and_redact() -> None:
    for name in ["api_key", "OPENAI_API_KEY", "access_token", "client_secret", "password"]:
        assert is_secret_key(name), name
    for name in ["max_tokens", "tpm", "track_usage", "lm", "api_base", "keyword"]:
        assert not is_secret_key(name), name
    data = {"a": 1, "token": SENTINEL, "nested": [{"password": SENTINEL}], "k": SecretStr("s")}
    cleaned = redact(data)
    assert SENTINEL not in repr(cleaned)
    assert cleaned["a"] == 1 and cleaned["k"] == config.REDACTED
    assert data["token"] == SENTINEL  # the input is not modified


# -- package surface and docs ---------------------------------------------------------------


def test_all_is_sorted_and_resolves() -> None:
    assert config.__all__ == sorted(config.__all__, key=lambda n: (not n.isupper(), n))
    for name in config.__all__:
        assert getattr(config, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        config.nope  # noqa: B018


def test_import_dspex_config_does_not_import_pydantic() -> None:
    code = "import sys, dspex.config; print('pydantic' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def _setting_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    groups = {"lm_client", "cache", "telemetry", "runtime", "budget"}
    for name, info in Settings.model_fields.items():
        if name in groups:
            sub = info.annotation
            assert isinstance(sub, type) and issubclass(sub, BaseModel)
            for field, inner in sub.model_fields.items():
                nested = inner.annotation
                if isinstance(nested, type) and issubclass(nested, BaseModel):  # runtime.ray
                    paths.extend((name, field, leaf) for leaf in nested.model_fields)
                else:
                    paths.append((name, field))
        else:
            paths.append((name,))
    paths.extend(("models", "<id>", field) for field in ModelSettings.model_fields)
    return paths


def test_docs_list_every_setting_and_env_var() -> None:
    docs = (ROOT / "docs" / "config.md").read_text()
    for path in _setting_paths():
        if path[0] == "models":
            assert f"`{path[-1]}`" in docs, path
            continue
        assert f"`{'.'.join(path)}`" in docs, path
        assert f"`{env_var_name(path)}`" in docs, path
    assert "kwargs > DSPEX_* environment > TOML file > defaults" in docs
    assert "load_settings" in docs and "DSPEX_CONFIG" in docs


def test_transport_and_response_limit_from_the_environment() -> None:
    env = {"DSPEX_LM_CLIENT__TRANSPORT": "HTTPX", "DSPEX_LM_CLIENT__MAX_RESPONSE_BYTES": "1024"}
    s = load_settings(env=env)
    assert (s.lm_client.transport, s.lm_client.max_response_bytes) == ("httpx", 1024)
    with pytest.raises(ConfigError, match="DSPEX_LM_CLIENT__TRANSPORT") as info:
        load_settings(env={"DSPEX_LM_CLIENT__TRANSPORT": "requests"})
    assert info.value.key == "lm_client.transport"


SECRET_NAMES = [
    "api_key",
    "OPENAI_API_KEY",
    "x-api-key",
    "x-goog-api-key",
    "apiKey",
    "apikey",
    "Ocp-Apim-Subscription-Key",  # Azure: programs' detector knew it, config's did not
    "subscription_key",
    "auth_key",
    "AWS_SECRET_ACCESS_KEY",
    "accessKey",
    "private_key",
    "client_secret",
    "access_token",
    "refresh_token",
    "Authorization",
    "auth",
    "bearer",
    "password",
    "passwd",
    "credentials",
    "Cookie",  # config's detector knew it, programs' did not
    "Set-Cookie",
    "cookies",
]
NOT_SECRET_NAMES = [
    "max_tokens",
    "max_completion_tokens",
    "tpm",
    "track_usage",
    "lm",
    "api_base",
    "api_version",
    "keyword",
    "keywords",
    "top_k",
    "key",
    "prompt_cache_key",
    "idempotency_key",
    "author",
    "temperature",
    "model",
    "stop",
]


def test_one_secret_detector_for_settings_and_saved_programs() -> None:
    from dspex.programs import _state

    assert _state.is_secret_key is is_secret_key  # the same function, not a copy
    for name in SECRET_NAMES:
        assert is_secret_key(name), name
    for name in NOT_SECRET_NAMES:
        assert not is_secret_key(name), name
