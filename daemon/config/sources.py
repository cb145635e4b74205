"""Where one ``load_settings`` takes its values from: the TOML file and an environment mapping.

``read_toml`` reads the file (a ConfigError naming it and the problem), ``keys_in_file``
refuses API keys written into it. The TOML table and the environment reach ``Settings``'
sources (``TomlSource``, ``MappingEnvSource``) through ``LOAD``, a context variable, so
concurrent and nested loads never see each other's inputs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from daemon.config.keys import KEY_CREDENTIAL, KEY_ENV
from providers.errors import ConfigError

__all__ = ["LOAD", "Load", "MappingEnvSource", "TomlSource", "keys_in_file", "read_toml"]


@dataclass(frozen=True)
class Load:
    """What one ``load_settings`` call hands its sources: the TOML table and the environment."""

    toml: Mapping[str, Any]
    environ: Mapping[str, str]


# A context variable rather than a class attribute or os.environ: each thread (and each task)
# sees only the load it started, so concurrent and nested loads never see each other's inputs.
LOAD: ContextVar[Load | None] = ContextVar("inboxd_settings_load", default=None)


class MappingEnvSource(EnvSettingsSource):
    """The environment source, reading the given mapping instead of os.environ.

    Overrides ``_load_env_vars``, the hook pydantic-settings' own mapping-backed sources
    (dotenv, AWS, GCP) override; the prefix, delimiter and case rules stay the library's.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # before super().__init__, which calls _load_env_vars
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class TomlSource(PydanticBaseSettingsSource):
    """The TOML file's table for one load."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file's contents, or a ConfigError naming the file and the problem."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"config: {path} does not exist; pass --config PATH "
            "(config.example.toml shows every key)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML ({exc}); fix the syntax") from None
    except OSError as exc:
        raise ConfigError(
            f"config: cannot read {path} ({exc.strerror}); check permissions"
        ) from None


def keys_in_file(data: Mapping[str, Any]) -> list[str]:
    """One problem line per provider section of the TOML table that holds an ``api_key``."""
    providers = data.get("providers")
    if not isinstance(providers, Mapping):
        return []
    return [
        f"providers.{name}.api_key: keys never go in the config file; set "
        f"{KEY_ENV[name][0]} or api_key_file, or use systemd LoadCredential="
        f"{KEY_CREDENTIAL[name]}"
        for name, section in providers.items()
        if name in KEY_ENV and isinstance(section, Mapping) and "api_key" in section
    ]
