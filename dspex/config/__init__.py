"""Settings: schema, defaults and loading (TOML file, DSPEX_* environment, kwargs)."""
