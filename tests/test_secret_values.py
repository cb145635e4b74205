"""API keys are removed by value, not only by shape: a provider answer that echoes a GLM key of
an unusual shape (which the shape regex misses) reaches no log line, sidecar, ledger row,
metric or ``inboxd status`` output."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from daemon.cli import main
from daemon.commands import run_status
from daemon.config.settings import Settings, load_settings
from daemon.ops.logs import RedactingHandler, TextFormatter, logging_to
from daemon.ops.notify import Notifier
from daemon.runtime.daemon import Daemon
from daemon.state.store import Store
from providers.classify import redact
from providers.errors import Permanent
from providers.redaction import add_secret, clear_secrets, scrub
from tests.harness import Outcomes, drop, started

# Not "<32 hex>.<secret>", not "sk-...": only removal by value can catch it.
KEY_ID, KEY_SECRET = "inboxd-test-id", "Zz9-unusual-Secret"
GLM_KEY = f"{KEY_ID}.{KEY_SECRET}"
LEAKS = (GLM_KEY, KEY_ID, KEY_SECRET)


def _echo_body() -> dict[str, object]:
    return {
        "error": {
            "code": "1214",
            "message": f"api key {GLM_KEY} (id {KEY_ID}, secret {KEY_SECRET}) may not upload here",
        }
    }


@asynccontextmanager
async def _echoing_glm() -> AsyncIterator[str]:
    """A loopback GLM files API that refuses every upload with a body quoting the key."""

    async def upload(_request: web.Request) -> web.Response:
        return web.json_response(_echo_body(), status=400)

    async def listing(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = web.Application()
    app.router.add_post("/api/paas/v4/files", upload)
    app.router.add_get("/api/paas/v4/files", listing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/paas/v4"
    finally:
        await runner.cleanup()


@pytest.fixture(autouse=True)
def _no_keys_known() -> None:
    """Each test starts with an empty registry: whatever it proves, it registered itself."""
    clear_secrets()


def test_redact_removes_a_registered_key_the_shape_regex_misses() -> None:
    """redact() removes a registered key and its id/secret halves by value."""
    text = f"bad key {GLM_KEY}; id={KEY_ID} secret={KEY_SECRET}"
    assert redact(text) == text  # nothing registered: the shape regex alone misses it
    add_secret(GLM_KEY)
    assert redact(text) == "bad key [redacted]; id=[redacted] secret=[redacted]"


def test_short_halves_are_not_registered_alone_but_the_whole_key_is() -> None:
    """A half under 8 characters would blank out ordinary words: only the whole key goes."""
    add_secret("abc.DEF")
    assert scrub("key abc.DEF; abc and DEF") == "key [redacted]; abc and DEF"


def test_provider_errors_and_log_lines_never_hold_a_registered_key() -> None:
    """A ProviderError built from an echoing body, and a log line quoting it, are clean."""
    add_secret(GLM_KEY)
    error = Permanent(f"HTTP 400: {GLM_KEY}", reason="upload_rejected", provider="glm")
    stream = io.StringIO()
    handler = RedactingHandler(stream, [])
    handler.setFormatter(TextFormatter(journal=True))
    record = logging.LogRecord("x", logging.ERROR, "", 0, "secret %s", (KEY_SECRET,), None)
    handler.emit(record)
    assert error.message == "HTTP 400: [redacted]"
    assert stream.getvalue() == "<3>ERROR x: secret ***\n"


@pytest.mark.anyio
async def test_an_echoed_unusual_glm_key_leaks_nowhere(tmp_path: Path) -> None:
    """End to end: the key quoted by a provider's 400 is in no log, sidecar, ledger row,
    metric or status output (text and --json)."""
    inbox = tmp_path / "docs"
    inbox.mkdir()
    stream = io.StringIO()
    outcomes = Outcomes()
    async with _echoing_glm() as base_url:
        settings = Settings.model_validate(
            {
                "state_dir": tmp_path / "state",
                "settle_seconds": 0.05,
                "metrics": {"listen": "127.0.0.1:0"},
                "log": {"level": "debug"},
                "providers": {"glm": {"base_url": base_url, "transports": ["zhipuai", "http"]}},
                "inbox": [{"name": "docs", "path": inbox, "providers": ["glm"]}],
            }
        )
        glm = settings.providers.glm.model_copy(update={"api_key": SecretStr(GLM_KEY)})
        settings = settings.model_copy(
            update={"providers": settings.providers.model_copy(update={"glm": glm})}
        )
        logging_to(stream)(settings)
        daemon = Daemon(settings, notifier=Notifier(None), observer=outcomes)
        async with started(daemon):
            drop(inbox, "a.txt", b"hello")
            result = await outcomes.wait("docs", "a.txt")
            async with httpx.AsyncClient() as client:
                scrape = (await client.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
    clear_secrets()  # what a fresh `inboxd status` process knows before it loads the config
    status_text, status_json = io.StringIO(), io.StringIO()
    add_secret(GLM_KEY)
    await run_status(settings, as_json=False, remote=False, out=status_text, now=0.0)
    await run_status(settings, as_json=True, remote=False, out=status_json, now=0.0)
    with sqlite3.connect(settings.state_file) as db:
        rows = repr(db.execute("SELECT * FROM ledger").fetchall())
    sidecars = "".join(p.read_text() for p in inbox.with_name("docs.quarantine").glob("*.json"))
    assert result.outcome == "quarantined"
    assert "upload_rejected" in sidecars
    assert "[redacted]" in sidecars  # the message is there, without the key
    assert json.loads(status_json.getvalue())["failures"][0]["reason"] == "upload_rejected"
    haystacks = {
        "logs": stream.getvalue(),
        "sidecars": sidecars,
        "ledger": rows,
        "metrics": scrape,
        "status": status_text.getvalue(),
        "status --json": status_json.getvalue(),
    }
    assert [(where, s) for where, text in haystacks.items() for s in LEAKS if s in text] == []


def test_status_command_removes_a_key_already_in_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row written by an older inboxd with the key in clear: `inboxd status` (text and --json)
    registers the key it loads and never prints it."""
    config = tmp_path / "config.toml"
    inbox = tmp_path / "docs"
    inbox.mkdir()
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[[inbox]]\nname = "docs"\npath = "{inbox}"\nproviders = ["glm"]\n'
    )
    monkeypatch.setenv("ZHIPUAI_API_KEY", GLM_KEY)

    async def old_row() -> None:
        async with Store.open(tmp_path / "state" / "inboxd.sqlite3") as store:
            row = await store.begin("docs", "a.txt", size=1, mtime_ns=1)
            await store.transition(
                row.id, "quarantined", reason="upload_rejected", detail=f"glm: bad {GLM_KEY}"
            )

    anyio.run(old_row)
    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert main(["status", "--json", "--config", str(config)]) == 0
    as_json = capsys.readouterr().out
    assert "a.txt: upload_rejected: glm: bad [redacted]" in text
    assert json.loads(as_json)["failures"][0]["detail"] == "glm: bad [redacted]"
    assert [s for s in LEAKS if s in text + as_json] == []


def test_loading_settings_registers_the_keys_it_finds(tmp_path: Path) -> None:
    """load_settings (every CLI command, every reload) adds the keys it finds to the registry."""
    inbox = tmp_path / "docs"
    inbox.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[[inbox]]\nname = "docs"\npath = "{inbox}"\nproviders = ["glm"]\n')
    assert scrub(GLM_KEY) == GLM_KEY
    load_settings(config, environ={"ZHIPUAI_API_KEY": GLM_KEY})
    assert scrub(f"{GLM_KEY} {KEY_SECRET}") == "[redacted] [redacted]"


def test_loading_settings_registers_the_database_password(tmp_path: Path) -> None:
    """load_settings adds the PostgreSQL password (PGPASSWORD and the systemd credential
    pg_password) to the registry, so no log line can show it."""
    inbox = tmp_path / "docs"
    inbox.mkdir()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pg_password").write_text("pg-credential-value\n")
    config = tmp_path / "config.toml"
    config.write_text(f'[[inbox]]\nname = "docs"\npath = "{inbox}"\nproviders = ["glm"]\n')
    env = {
        "ZHIPUAI_API_KEY": GLM_KEY,
        "PGPASSWORD": "pg-env-value",
        "CREDENTIALS_DIRECTORY": str(creds),
    }
    load_settings(config, environ=env)
    assert scrub("pg-env-value pg-credential-value") == "[redacted] [redacted]"
