"""inboxd's settings: one frozen model, loaded once, passed down.

Sources, highest first: CLI flags (passed as ``overrides``), the environment (``INBOXD_``
prefix, ``__`` between nested keys, e.g. ``INBOXD_PROVIDERS__KIMI__TIMEOUT=30``), the TOML
file, the defaults below. API keys come from ``MOONSHOT_API_KEY`` / ``ZHIPUAI_API_KEY``
(or ``ZAI_API_KEY``), else from ``api_key_file``, else from ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``, names ``moonshot_api_key`` / ``zhipuai_api_key``); never from
the config file itself.

``load_settings`` turns every problem into a ``ConfigError`` whose lines each name the key
path and the fix (``daemon.config.problems``); the TOML file and the environment come in
through ``daemon.config.sources``; the semantic checks (folders, overlaps, purposes, keys)
live in ``daemon.config.check``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from daemon.config.keys import find_keys
from daemon.config.problems import describe
from daemon.config.sources import (
    LOAD,
    Load,
    MappingEnvSource,
    TomlSource,
    keys_in_file,
    read_toml,
)
from providers.errors import ConfigError
from providers.limits import LIMITS, MIB, ProviderLimits, PurposeOverride

__all__ = [
    "DEFAULT_CONFIG",
    "BreakerSettings",
    "InboxSettings",
    "LogSettings",
    "MetricsSettings",
    "ProviderSettings",
    "ProvidersSettings",
    "PurposeLimitSettings",
    "RetentionSettings",
    "RetrySettings",
    "Settings",
    "load_settings",
]

DEFAULT_CONFIG = Path("/etc/inboxd/config.toml")

ProviderName = Literal["kimi", "glm"]
TransportName = Literal["zhipuai", "openai", "http"]

_HOST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_STATE_URL_SCHEMES = ("postgresql", "postgres")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricsSettings(_Section):
    """``[metrics]``: the HTTP listener for /metrics, /healthz and /readyz."""

    listen: str = "127.0.0.1:9464"
    enabled: bool = True

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LogSettings(_Section):
    """``[log]``."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"
    summary_interval: float = Field(default=60.0, gt=0)


class RetrySettings(_Section):
    """``[providers.<name>.retry]``: the one retry loop (full jitter, budget, deadline)."""

    attempts: int = Field(default=3, ge=1)
    base: float = Field(default=1.0, ge=0)
    cap: float = Field(default=30.0, ge=0)
    deadline: float = Field(default=600.0, gt=0)
    retry_after_cap: float = Field(default=60.0, ge=0)
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    budget_floor: float = Field(default=10.0, ge=0)
    # Seconds a file may fail transiently (from when inboxd first took it up) before it is
    # quarantined as upload_failed; 0: never, it waits and is tried again forever.
    give_up_after: float = Field(default=0.0, ge=0)


class BreakerSettings(_Section):
    """``[providers.<name>.breaker]``: when the circuit opens and for how long."""

    window: int = Field(default=10, ge=1)
    min_calls: int = Field(default=5, ge=1)
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    consecutive_failures: int = Field(default=5, ge=1)
    open_base: float = Field(default=30.0, ge=0)
    open_max: float = Field(default=900.0, ge=0)
    quota_park: float = Field(default=3600.0, ge=0)


class RetentionSettings(_Section):
    """``[providers.<name>.retention]``: how many of inboxd's files the account keeps
    (``daemon.remote``); unset keys keep everything."""

    max_files: int | None = Field(default=None, gt=0)
    max_bytes: int | None = Field(default=None, gt=0)
    max_age_days: float = Field(default=0.0, ge=0)

    @property
    def configured(self) -> bool:
        """True when any limit is set (a retention pass has something to enforce)."""
        return self.max_files is not None or self.max_bytes is not None or self.max_age_days > 0


class PurposeLimitSettings(_Section):
    """``[providers.<name>.limits.<purpose>]``: override a documented limit."""

    max_bytes: int | None = Field(default=None, gt=0)
    max_image_bytes: int | None = Field(default=None, gt=0)
    types: list[str] | None = None
    max_count: int | None = Field(default=None, gt=0)


class ProviderSettings(_Section):
    """``[providers.kimi]`` / ``[providers.glm]``."""

    base_url: str
    transports: list[TransportName]
    concurrency: int = Field(default=4, ge=1)
    # Uploads a minute; None: unknown, learned from the provider's 429s (providers.pacing).
    rpm: float | None = Field(default=None, gt=0)
    timeout: float = Field(default=120.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    api_key_file: Path | None = None
    # Filled by load_settings from the environment or a key file, never from the TOML file.
    api_key: SecretStr | None = None
    max_files: int | None = Field(default=None, gt=0)
    max_total_bytes: int | None = Field(default=None, gt=0)
    limits: dict[str, PurposeLimitSettings] = Field(default_factory=dict)
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    retention: RetentionSettings = RetentionSettings()

    @field_validator("transports")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one transport")
        if len(set(value)) != len(value):
            raise ValueError("a transport is named twice")
        return value

    def effective_limits(self, provider: str) -> ProviderLimits:
        """The documented limits table of ``provider`` with this section's overrides."""
        overrides = {
            purpose: PurposeOverride(
                max_bytes=o.max_bytes,
                types=None
                if o.types is None
                else frozenset(t.lower().lstrip(".") for t in o.types),
                max_image_bytes=o.max_image_bytes,
                max_count=o.max_count,
            )
            for purpose, o in self.limits.items()
        }
        return LIMITS[provider].with_overrides(
            overrides, max_files=self.max_files, max_total_bytes=self.max_total_bytes
        )


def _kimi() -> ProviderSettings:
    return ProviderSettings(base_url="https://api.moonshot.ai/v1", transports=["openai", "http"])


def _glm() -> ProviderSettings:
    return ProviderSettings(
        base_url="https://api.z.ai/api/paas/v4", transports=["zhipuai", "openai", "http"]
    )


class ProvidersSettings(_Section):
    """``[providers]``: one section per provider."""

    kimi: ProviderSettings = Field(default_factory=_kimi)
    glm: ProviderSettings = Field(default_factory=_glm)

    def get(self, name: str) -> ProviderSettings:
        value = getattr(self, name)
        assert isinstance(value, ProviderSettings)
        return value


class InboxSettings(_Section):
    """One ``[[inbox]]``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    path: Path
    providers: list[ProviderName] = Field(min_length=1)
    purpose: dict[ProviderName, str] = Field(default_factory=dict)
    on_success: Literal["archive", "delete"] = "archive"
    done_dir: Path | None = None
    quarantine_dir: Path | None = None
    recursive: bool = False
    dedupe: bool = True
    on_quota: Literal["wait", "quarantine"] = "wait"
    extract: bool = False
    keep_remote: bool = True

    @field_validator("providers")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a provider is named twice")
        return value

    @property
    def done_path(self) -> Path:
        """``done_dir``, defaulting to ``<path>.done`` beside the inbox."""
        return self.done_dir or self.path.with_name(self.path.name + ".done")

    @property
    def quarantine_path(self) -> Path:
        """``quarantine_dir``, defaulting to ``<path>.quarantine`` beside the inbox."""
        return self.quarantine_dir or self.path.with_name(self.path.name + ".quarantine")

    def purpose_for(self, provider: str) -> str:
        """The purpose used on ``provider``: configured, else the provider's documented default."""
        chosen: str | None = self.purpose.get(provider)  # type: ignore[call-overload]
        return chosen or LIMITS[provider].default_purpose


class Settings(BaseSettings):
    """The whole configuration (see config.example.toml for every key, commented)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="INBOXD_",
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    state_dir: Path = Path("/var/lib/inboxd")
    # The shared PostgreSQL store of a fleet (None: the SQLite file in state_dir).
    state_url: str | None = None
    # This host's name in a fleet (ledger row owners, leases, temp file names).
    host_id: str = Field(default_factory=socket.gethostname)
    settle_seconds: float = Field(default=2.0, ge=0)
    rescan_interval: float = Field(default=60.0, gt=0)
    shutdown_grace: float = Field(default=20.0, ge=0)
    max_inflight_bytes: int = Field(default=256 * MIB, gt=0)
    reconcile_skew: float = Field(default=300.0, ge=0)
    ledger_retention_days: float = Field(default=365.0, ge=0)
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    providers: ProvidersSettings = ProvidersSettings()
    inbox: list[InboxSettings] = Field(default_factory=list)

    @field_validator("state_url")
    @classmethod
    def _state_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in _STATE_URL_SCHEMES or not parts.netloc:
            raise ValueError(
                "expected a postgresql://user@host:port/database URL (scheme postgresql:// or "
                "postgres://); remove the key to keep the SQLite state file in state_dir"
            )
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise PydanticCustomError(
                "secret_in_config",  # ``daemon.config.problems.describe`` never echoes it
                "holds a password; passwords never go in the config file: remove it from the "
                "URL and set PGPASSWORD, or put it in ~/.pgpass, or in "
                "$CREDENTIALS_DIRECTORY/pg_password (systemd LoadCredential=pg_password)",
            )
        return value

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        if _HOST_ID.fullmatch(value) is None:
            raise ValueError(
                "use 1 to 64 of A-Z a-z 0-9 . _ - (each host of a fleet needs its own)"
            )
        return value

    @property
    def state_file(self) -> Path:
        return self.state_dir / "inboxd.sqlite3"

    def providers_in_use(self) -> list[str]:
        """Providers named by at least one inbox, in first-use order."""
        seen: dict[str, None] = {}
        for inbox in self.inbox:
            seen.update(dict.fromkeys(inbox.providers))
        return list(seen)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        load = LOAD.get()
        if load is None:  # Settings() built directly: os.environ and the defaults only
            return (init_settings, env_settings, TomlSource(settings_cls, {}))
        return (
            init_settings,
            MappingEnvSource(settings_cls, load.environ),
            TomlSource(settings_cls, load.toml),
        )


def load_settings(
    config: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load the settings once: CLI ``overrides`` > environment > TOML ``config`` > defaults.

    ``config=None`` means the default path, which may be absent (built-in defaults then).
    Raises ConfigError with one line per problem.
    """
    env = os.environ if environ is None else environ
    if config is None:
        data = read_toml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    else:
        data = read_toml(config)
    problems = keys_in_file(data)
    if problems:
        raise ConfigError(problems)
    token = LOAD.set(Load(toml=data, environ=env))
    try:
        settings = Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError([describe(err) for err in exc.errors()]) from None
    finally:
        LOAD.reset(token)
    return _with_keys(settings, env)


def _with_keys(settings: Settings, env: Mapping[str, str]) -> Settings:
    """``settings`` with each provider in use given the key ``find_keys`` found for it."""
    in_use = {name: settings.providers.get(name) for name in settings.providers_in_use()}
    updates = {
        name: in_use[name].model_copy(update={"api_key": key})
        for name, key in find_keys(in_use, env).items()
        if in_use[name].api_key is None
    }
    if not updates:
        return settings
    return settings.model_copy(update={"providers": settings.providers.model_copy(update=updates)})
