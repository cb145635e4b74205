"""API keys: found in the environment, an ``api_key_file`` or systemd credentials, never logged.

Order per provider: ``MOONSHOT_API_KEY`` (kimi) / ``ZHIPUAI_API_KEY`` then ``ZAI_API_KEY`` (glm);
else ``providers.<name>.api_key_file``; else ``$CREDENTIALS_DIRECTORY/<credential name>``
(systemd ``LoadCredential=``). The PostgreSQL password (``PGPASSWORD``,
``$CREDENTIALS_DIRECTORY/pg_password``) is registered for redaction with the keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from daemon.state.url import pg_password
from providers.errors import ConfigError
from providers.redaction import add_secret

__all__ = ["KEY_CREDENTIAL", "KEY_ENV", "KeySource", "find_keys"]

# Where each provider's key may come from, in order (see module docstring).
KEY_ENV: Mapping[str, tuple[str, ...]] = {
    "kimi": ("MOONSHOT_API_KEY",),
    "glm": ("ZHIPUAI_API_KEY", "ZAI_API_KEY"),
}
KEY_CREDENTIAL: Mapping[str, str] = {"kimi": "moonshot_api_key", "glm": "zhipuai_api_key"}


class KeySource(Protocol):
    """What a provider's config section says about its key (a ``ProviderSettings``)."""

    @property
    def api_key(self) -> SecretStr | None: ...

    @property
    def api_key_file(self) -> Path | None: ...


def find_keys(sections: Mapping[str, KeySource], env: Mapping[str, str]) -> dict[str, SecretStr]:
    """Each provider's key, ``{provider: key}``, for the ``sections`` given (the providers in
    use: an unusable key file of an unused provider does not stop the daemon); a provider
    with no key found is absent.

    Every key found (or already set) is added to the process-wide redaction registry
    (``providers.redaction``): each command that loads settings, and each reload, then
    removes it by value from whatever it prints or stores.
    """
    keys: dict[str, SecretStr] = {}
    problems: list[str] = []
    for name, section in sections.items():
        if section.api_key is not None:
            add_secret(section.api_key.get_secret_value())
            keys[name] = section.api_key
            continue
        try:
            key = _find_key(name, section, env)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if key is not None:
            add_secret(key)
            keys[name] = SecretStr(key)
    with contextlib.suppress(ConfigError):  # unreadable: the store says so if state_url uses it
        pg_password(env)  # registers the database password (PGPASSWORD, the credential) too
    if problems:
        raise ConfigError(problems)
    return keys


def _find_key(name: str, section: KeySource, env: Mapping[str, str]) -> str | None:
    for var in KEY_ENV[name]:
        if env.get(var, "").strip():
            return env[var].strip()
    if section.api_key_file is not None:
        return _read_key(section.api_key_file, f"providers.{name}.api_key_file")
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / KEY_CREDENTIAL[name]).is_file():
        return _read_key(Path(creds) / KEY_CREDENTIAL[name], f"$CREDENTIALS_DIRECTORY/{name}")
    return None


def _read_key(path: Path, key: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {path} ({exc.strerror}); make it readable by the daemon's user"
        ) from None
    if not value:
        raise ConfigError(f"{key}: {path} is empty; write the API key into it")
    return value
