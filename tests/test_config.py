"""Configuration: sources and their order, key lookup, and one exact line per bad-config case."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config.settings import load_settings
from daemon.state.schema import SCHEMA_VERSION

KEYS = ("MOONSHOT_API_KEY", "ZHIPUAI_API_KEY", "ZAI_API_KEY", "CREDENTIALS_DIRECTORY")

WriteConfig = Callable[[str], Path]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no inboxd variables and no API keys in the environment."""
    for name in list(os.environ):
        if name.startswith("INBOXD_") or name in KEYS:
            monkeypatch.delenv(name)


def _inbox_toml(path: Path, name: str = "reports", providers: str = '["kimi"]') -> str:
    return f'[[inbox]]\nname = "{name}"\npath = "{path}"\nproviders = {providers}\n'


def _errors(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str]]:
    code = main(["check-config", "-c", str(config)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("config error: ")]


def test_unknown_key_names_key_and_fix(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown key is refused with its full path and the fix."""
    config = write("settle_secs = 2\n" + _inbox_toml(inbox))
    assert _errors(capsys, config) == (
        2,
        [
            "config error: settle_secs: unknown key; remove it or fix its spelling "
            "(config.example.toml lists every key)"
        ],
    )


def test_unknown_nested_key(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown key inside an inbox table names the inbox's index."""
    config = write(_inbox_toml(inbox) + 'colour = "red"\n')
    code, lines = _errors(capsys, config)
    assert code == 2
    assert lines == [
        "config error: inbox[0].colour: unknown key; remove it or fix its spelling "
        "(config.example.toml lists every key)"
    ]


def test_wrong_type(write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A value of the wrong type names the key, what was expected and what was given."""
    config = write('settle_seconds = "soon"\n' + _inbox_toml(inbox))
    assert _errors(capsys, config) == (
        2,
        ["config error: settle_seconds: expected a number, got 'soon'; fix its value"],
    )


def test_missing_inbox_folder(
    write: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbox folder that does not exist is refused with the mkdir that fixes it."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    missing = tmp_path / "nope"
    assert _errors(capsys, write(_inbox_toml(missing))) == (
        2,
        [
            f"config error: inbox[0].path: {missing} does not exist; create it "
            f"(mkdir -p {missing}) or fix the path"
        ],
    )


def test_nested_inboxes(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbox inside another inbox is refused."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    inner = inbox / "sub"
    inner.mkdir()
    config = write(_inbox_toml(inbox) + _inbox_toml(inner, name="sub"))
    assert _errors(capsys, config) == (
        2,
        [
            f"config error: inbox[1].path: {inner} is nested with inbox[0].path {inbox}; "
            "inboxes must not overlap each other or any done/quarantine folder: give each its "
            "own folder (the defaults <path>.done and <path>.quarantine sit beside the inbox)"
        ],
    )


def test_inbox_inside_done_folder(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbox placed inside another inbox's done folder is refused."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    done = inbox.with_name("in.done")
    inner = done / "x"
    inner.mkdir(parents=True)
    config = write(_inbox_toml(inbox) + _inbox_toml(inner, name="x"))
    code, lines = _errors(capsys, config)
    assert code == 2
    assert lines == [
        f"config error: inbox[1].path: {inner} is nested with inbox[0].done_dir {done}; "
        "inboxes must not overlap each other or any done/quarantine folder: give each its "
        "own folder (the defaults <path>.done and <path>.quarantine sit beside the inbox)",
        # x's default quarantine folder, beside x, is inside inbox[0]'s done folder too.
        f"config error: inbox[0].done_dir: {done} contains inbox[1].quarantine_dir "
        f"{done / 'x.quarantine'}; uploaded and quarantined files must not mix (inboxd requeue "
        "would send uploaded files and receipts again): give each its own folder (the "
        "defaults <path>.done and <path>.quarantine sit beside the inbox)",
    ]


def test_purpose_not_accepted(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GLM's multipart field name "file" is not a purpose: refused at start, naming valid ones."""
    monkeypatch.setenv("ZHIPUAI_API_KEY", "id.secret")
    config = write(_inbox_toml(inbox, providers='["glm"]') + 'purpose = { glm = "file" }\n')
    assert _errors(capsys, config) == (
        2,
        [
            "config error: inbox[0].purpose.glm: 'file' is not a purpose GLM accepts for inbox "
            "'reports'; use one of agent, batch, code-interpreter, file-extract, fine-tune, "
            "voice-clone-input"
        ],
    )


def test_kimi_assistants_purpose_refused(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Moonshot documents no "assistants" purpose: refused at start."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    config = write(_inbox_toml(inbox) + 'purpose = { kimi = "assistants" }\n')
    code, lines = _errors(capsys, config)
    assert code == 2
    assert lines == [
        "config error: inbox[0].purpose.kimi: 'assistants' is not a purpose Kimi accepts for "
        "inbox 'reports'; use one of batch, file-extract, image, video"
    ]


def test_provider_without_key(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A provider in use with no API key names every place a key may come from."""
    config = write(_inbox_toml(inbox, providers='["glm"]'))
    assert _errors(capsys, config) == (
        2,
        [
            "config error: providers.glm: no API key; set ZHIPUAI_API_KEY or ZAI_API_KEY, or "
            "providers.glm.api_key_file, or systemd LoadCredential=zhipuai_api_key"
        ],
    )


def test_key_in_config_file_refused(
    write: WriteConfig, inbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key written into the config file is refused, and the key is not echoed."""
    config = write('[providers.kimi]\napi_key = "sk-secret-123"\n' + _inbox_toml(inbox))
    code = main(["check-config", "-c", str(config)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.splitlines() == [
        "config error: providers.kimi.api_key: keys never go in the config file; set "
        "MOONSHOT_API_KEY or api_key_file, or use systemd LoadCredential=moonshot_api_key"
    ]
    assert "sk-secret-123" not in captured.err + captured.out


def test_invalid_toml(write: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """A TOML syntax error names the file and asks for the syntax to be fixed, no traceback."""
    config = write("state_dir = \n")
    code, lines = _errors(capsys, config)
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"config error: config: {config} is not valid TOML (")
    assert lines[0].endswith("); fix the syntax")


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An explicit --config that does not exist is refused."""
    assert _errors(capsys, tmp_path / "absent.toml") == (
        2,
        [
            f"config error: config: {tmp_path / 'absent.toml'} does not exist; pass --config "
            "PATH (config.example.toml shows every key)"
        ],
    )


def test_no_inbox(write: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """A config with no inbox is refused: the daemon would have nothing to do."""
    assert _errors(capsys, write("settle_seconds = 1\n")) == (
        2,
        [
            "config error: inbox: no [[inbox]] is configured; add one "
            "(config.example.toml shows how)"
        ],
    )


def test_kimi_with_zhipuai_transport(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The zhipuai SDK cannot talk to Moonshot: refused, naming the transports that can."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    config = write('[providers.kimi]\ntransports = ["zhipuai"]\n' + _inbox_toml(inbox))
    assert _errors(capsys, config) == (
        2,
        [
            "config error: providers.kimi.transports: 'zhipuai' cannot talk to Kimi; use some "
            "of openai, http"
        ],
    )


def test_sources_order(write: WriteConfig, inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI overrides beat the environment, which beats the file, which beats the defaults."""
    config = write(
        "settle_seconds = 5.0\nrescan_interval = 30.0\n[providers.kimi]\nconcurrency = 2\n"
        + _inbox_toml(inbox)
    )
    monkeypatch.setenv("INBOXD_SETTLE_SECONDS", "4.0")
    monkeypatch.setenv("INBOXD_RESCAN_INTERVAL", "20.0")
    monkeypatch.setenv("INBOXD_PROVIDERS__KIMI__TIMEOUT", "7.5")
    settings = load_settings(config, {"settle_seconds": 3.0})
    assert settings.settle_seconds == 3.0
    assert settings.rescan_interval == 20.0
    assert settings.providers.kimi.timeout == 7.5
    assert settings.providers.kimi.concurrency == 2
    assert settings.shutdown_grace == 20.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ZHIPUAI_API_KEY": "a.b"}, "a.b"),
        ({"ZAI_API_KEY": "c.d"}, "c.d"),
        ({"ZHIPUAI_API_KEY": "a.b", "ZAI_API_KEY": "c.d"}, "a.b"),
    ],
)
def test_glm_key_from_env(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: str,
) -> None:
    """GLM's key comes from ZHIPUAI_API_KEY, else ZAI_API_KEY."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(write(_inbox_toml(inbox, providers='["glm"]')))
    key = settings.providers.glm.api_key
    assert key is not None
    assert key.get_secret_value() == expected


def test_key_from_file_and_credentials(
    write: WriteConfig, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api_key_file is read for one provider; $CREDENTIALS_DIRECTORY serves the other."""
    keyfile = tmp_path / "kimi.key"
    keyfile.write_text("sk-from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "zhipuai_api_key").write_text("id.from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = write(
        f'[providers.kimi]\napi_key_file = "{keyfile}"\n'
        + _inbox_toml(inbox, providers='["kimi", "glm"]')
    )
    settings = load_settings(config)
    kimi, glm = settings.providers.kimi.api_key, settings.providers.glm.api_key
    assert kimi is not None
    assert glm is not None
    assert (kimi.get_secret_value(), glm.get_secret_value()) == (
        "sk-from-file",
        "id.from-credential",
    )
    assert "sk-from-file" not in repr(settings)
    assert "sk-from-file" not in str(settings.model_dump())


def test_empty_key_file(
    write: WriteConfig, inbox: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty api_key_file is refused, naming the key and the file."""
    keyfile = tmp_path / "empty.key"
    keyfile.write_text("")
    config = write(f'[providers.kimi]\napi_key_file = "{keyfile}"\n' + _inbox_toml(inbox))
    assert _errors(capsys, config) == (
        2,
        [
            f"config error: providers.kimi.api_key_file: {keyfile} is empty; "
            "write the API key into it"
        ],
    )


def test_unused_provider_key_file_ignored(
    write: WriteConfig, inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider no inbox uses is not asked for its key, even when its key file is bad."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    config = write(
        f'[providers.glm]\napi_key_file = "{tmp_path / "missing.key"}"\n' + _inbox_toml(inbox)
    )
    settings = load_settings(config)
    assert settings.providers.glm.api_key is None
    assert settings.providers_in_use() == ["kimi"]


def test_example_config_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """config.example.toml passes check-config once its inbox folder exists and keys are set."""
    example = Path(__file__).parent.parent / "config.example.toml"
    root = tmp_path / "srv"
    state = tmp_path / "state"
    text = example.read_text().replace("/srv/inbox", str(root))
    text = text.replace('"/var/lib/inboxd"', f'"{state}"')
    (root / "reports").mkdir(parents=True)
    config = tmp_path / "example.toml"
    config.write_text(text)
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    monkeypatch.setenv("ZHIPUAI_API_KEY", "id.secret")
    assert main(["check-config", "-c", str(config)]) == 0
    assert capsys.readouterr().out == (
        "config OK: 1 inbox(es), providers in use: kimi, glm\n"
        f"state: sqlite {state}/inboxd.sqlite3: not created yet (schema v{SCHEMA_VERSION} at "
        "the first start)\n"
    )


def test_cross_filesystem_warning(
    write: WriteConfig,
    inbox: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A quarantine folder on another filesystem is allowed, with a warning that moves copy."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == inbox.stat().st_dev:
        pytest.fail("this test needs /dev/shm on another filesystem than tmp_path")
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-test")
    qdir = shm / f"inboxd-test-{os.getpid()}"
    config = write(_inbox_toml(inbox) + f'quarantine_dir = "{qdir}"\n')
    assert main(["check-config", "-c", str(config)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if ".retention" not in line] == [
        f"warning: inbox[0].quarantine_dir: {qdir} is on another filesystem than {inbox}; "
        "moves there copy, fsync and delete instead of an atomic rename"
    ]


# provider-facts.md: the purposes each provider's upload docs list TODAY (GLM's file-extract
# is only in older docs and takes no .txt; fine-tune is in the SDK types only; Kimi's batch
# only in the newest reference).
UPLOAD_PURPOSES_TODAY = {
    "kimi": {"file-extract", "image", "video"},
    "glm": {"agent", "batch", "code-interpreter", "voice-clone-input"},
}


def test_example_config_uses_purposes_documented_today() -> None:
    """Every purpose config.example.toml sets is one the provider documents for upload today."""
    example = Path(__file__).parent.parent / "config.example.toml"
    config = tomllib.loads(example.read_text())
    used = [
        (provider, purpose)
        for inbox in config["inbox"]
        for provider, purpose in inbox.get("purpose", {}).items()
    ]
    assert used == [("kimi", "file-extract"), ("glm", "agent")]
    assert all(purpose in UPLOAD_PURPOSES_TODAY[p] for p, purpose in used)
