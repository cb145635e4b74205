"""``state_url``: which PostgreSQL database holds the shared state, never with its password.

The password comes from ``PGPASSWORD`` or a ``~/.pgpass``-style file (libpq reads both itself)
or ``$CREDENTIALS_DIRECTORY/pg_password`` (``pg_password``): a URL that carries one is refused,
so that the TOML file holds no secret. Every password value found is registered for redaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from providers.errors import ConfigError
from providers.redaction import add_secret

__all__ = ["PASSWORD_FIX", "is_state_url", "parse_state_url", "pg_password", "state_target"]

PASSWORD_FIX = (
    "put the password in PGPASSWORD, a ~/.pgpass file or $CREDENTIALS_DIRECTORY/pg_password "  # noqa: S105 -- where one goes
    "(systemd LoadCredential=pg_password:...), never in the config file"
)
_SCHEMES = ("postgresql://", "postgres://")


def state_target(settings: Any) -> Path | str:
    """What ``Store.open`` opens for these settings: ``state_url`` when set, else the state
    file in ``state_dir``."""
    url = getattr(settings, "state_url", None)
    return str(url) if url else Path(settings.state_file)


def is_state_url(target: object) -> bool:
    """True when ``target`` is a PostgreSQL URL (a str starting postgresql:// or postgres://)."""
    return isinstance(target, str) and target.startswith(_SCHEMES)


def parse_state_url(url: str) -> tuple[str, str]:
    """(the conninfo to connect with, ``host:port/db`` to name the database in messages).

    Raises ConfigError naming ``state_url`` for a URL that is not PostgreSQL's, cannot be
    parsed, or carries a password (the message never repeats the password).
    """
    if not is_state_url(url):
        raise ConfigError(
            "state_url: must be a postgresql://user@host:port/database URL (or leave it out "
            "to keep the state in state_dir)"
        )
    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg.ProgrammingError; its text may quote the URL
        add_secret(_raw_password(url))
        raise ConfigError(
            "state_url: cannot be parsed as a postgresql:// URL; use "
            "postgresql://user@host:port/database"
        ) from exc
    if params.get("password"):
        add_secret(str(params["password"]))
        raise ConfigError(f"state_url: contains a password; {PASSWORD_FIX}")
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    db = str(params.get("dbname") or params.get("user") or "")
    return url, f"{host}:{port}/{db}"


def _raw_password(url: str) -> str | None:
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    userinfo = netloc.rpartition("@")[0]
    return userinfo.partition(":")[2] or None


def pg_password(env: Mapping[str, str]) -> str | None:
    """The password from ``$CREDENTIALS_DIRECTORY/pg_password`` (None when there is none);
    it and ``PGPASSWORD`` are registered for redaction. Raises ConfigError when the
    credential file exists but cannot be read."""
    add_secret(env.get("PGPASSWORD"), parts=False)
    folder = env.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / "pg_password"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"state_url: cannot read the password credential {path} ({exc}); "
            "check LoadCredential= in the unit"
        ) from exc
    password = text.strip("\r\n")
    add_secret(password, parts=False)
    return password or None
