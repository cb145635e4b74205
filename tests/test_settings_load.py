"""load_settings is re-entrant and thread-safe: each load sees only its own file and environment."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.config.settings import Settings, load_settings

# Generous bounds for waiting on events; a healthy run never comes near them.
_WAIT = 30.0


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no inboxd variables in the process environment."""
    for name in list(os.environ):
        if name.startswith("INBOXD_"):
            monkeypatch.delenv(name)


class _HookedEnv(Mapping[str, str]):
    """An environment mapping that runs ``hook`` the first time a load iterates over it.

    The hook runs inside load_settings, so a test can look at the process (or start another
    load) at a moment when the old implementation had swapped os.environ and the TOML table.
    """

    def __init__(self, values: dict[str, str], hook: Callable[[], None]) -> None:
        self._values = values
        self._hook = hook
        self._fired = False

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[str]:
        if not self._fired:
            self._fired = True
            self._hook()
        return iter(self._values)


def _config(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


class _PausedLoad:
    """A load of ``config`` in its own thread, held inside load_settings until released."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self._inside = threading.Event()
        self._release = threading.Event()
        self._env = _HookedEnv(env, self._pause)
        self._config = config
        self.result: Settings | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run)

    def _pause(self) -> None:
        self._inside.set()
        if not self._release.wait(_WAIT):
            raise TimeoutError("the test never released the paused load")

    def _run(self) -> None:
        try:
            self.result = load_settings(self._config, environ=self._env)
        except BaseException as exc:
            self.error = exc  # reported by finish() in the test thread, not lost

    def start(self) -> None:
        self._thread.start()
        assert self._inside.wait(_WAIT), "the load never iterated its environment"

    def finish(self) -> Settings:
        self._release.set()
        self._thread.join(_WAIT)
        assert not self._thread.is_alive()
        assert self.error is None, self.error
        assert self.result is not None
        return self.result


def test_load_never_touches_os_environ(tmp_path: Path) -> None:
    """While a load with its own environment mapping runs, os.environ keeps its exact contents."""
    before = dict(os.environ)
    seen: list[dict[str, str]] = []
    env = _HookedEnv({"INBOXD_SETTLE_SECONDS": "7"}, lambda: seen.append(dict(os.environ)))

    settings = load_settings(_config(tmp_path, "a", "rescan_interval = 5\n"), environ=env)

    assert seen == [before]
    assert dict(os.environ) == before
    assert (settings.settle_seconds, settings.rescan_interval) == (7.0, 5.0)


def test_parallel_loads_keep_their_own_file_and_environment(tmp_path: Path) -> None:
    """A load held mid-way in one thread keeps its own file and environment while another loads."""
    before = dict(os.environ)
    held = _PausedLoad(
        _config(tmp_path, "a", "settle_seconds = 1.5\n"), {"INBOXD_RESCAN_INTERVAL": "11"}
    )
    held.start()
    try:
        other = load_settings(
            _config(tmp_path, "b", "settle_seconds = 3.5\n"),
            environ={"INBOXD_RESCAN_INTERVAL": "22"},
        )
    finally:
        first = held.finish()

    assert (first.settle_seconds, first.rescan_interval) == (1.5, 11.0)
    assert (other.settle_seconds, other.rescan_interval) == (3.5, 22.0)
    assert dict(os.environ) == before


def test_plain_settings_never_see_a_running_load(tmp_path: Path) -> None:
    """Settings() built while another thread is mid-load gets the defaults, not that load's file."""
    held = _PausedLoad(_config(tmp_path, "a", "settle_seconds = 1.5\n"), {})
    held.start()
    try:
        plain = Settings()
    finally:
        loaded = held.finish()

    assert plain.settle_seconds == 2.0
    assert loaded.settle_seconds == 1.5


def test_nested_load_leaves_the_outer_load_intact(tmp_path: Path) -> None:
    """A load started inside another load returns its own values; the outer one keeps its own."""
    inner: list[Settings] = []
    config_b = _config(tmp_path, "b", "settle_seconds = 3.5\n")
    env = _HookedEnv(
        {"INBOXD_RESCAN_INTERVAL": "11"},
        lambda: inner.append(load_settings(config_b, environ={"INBOXD_RESCAN_INTERVAL": "22"})),
    )

    outer = load_settings(_config(tmp_path, "a", "settle_seconds = 1.5\n"), environ=env)

    assert [(s.settle_seconds, s.rescan_interval) for s in inner] == [(3.5, 22.0)]
    assert (outer.settle_seconds, outer.rescan_interval) == (1.5, 11.0)


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Threads swap the GIL every microsecond during the test, so races show up more often."""
    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


@pytest.mark.usefixtures("eager_thread_switches")
def test_many_concurrent_loads_each_get_their_own_values(tmp_path: Path) -> None:
    """Rounds of fifty loads released together in fifty threads each return their own values."""
    count, rounds = 50, 4
    before = dict(os.environ)
    configs = [_config(tmp_path, f"c{i}", f"settle_seconds = {i}.5\n") for i in range(count)]
    start = threading.Barrier(count)

    def load(i: int) -> tuple[float, float, float]:
        start.wait(_WAIT)
        settings = load_settings(
            configs[i],
            overrides={"shutdown_grace": float(i)},
            environ={"INBOXD_RESCAN_INTERVAL": str(i + 1)},
        )
        return settings.settle_seconds, settings.rescan_interval, settings.shutdown_grace

    with ThreadPoolExecutor(max_workers=count) as pool:
        got = [list(pool.map(load, range(count))) for _ in range(rounds)]

    assert got == [[(i + 0.5, float(i + 1), float(i)) for i in range(count)]] * rounds
    assert dict(os.environ) == before


def test_precedence_unchanged_with_an_environment_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overrides beat the given mapping, which beats the file; os.environ is not consulted."""
    monkeypatch.setenv("INBOXD_LOG__LEVEL", "error")
    settings = load_settings(
        _config(
            tmp_path, "a", 'settle_seconds = 1.5\nrescan_interval = 9\n[log]\nformat = "json"\n'
        ),
        overrides={"settle_seconds": 4.0},
        environ={"INBOXD_SETTLE_SECONDS": "3", "INBOXD_RESCAN_INTERVAL": "8"},
    )

    assert settings.settle_seconds == 4.0
    assert settings.rescan_interval == 8.0
    assert (settings.log.format, settings.log.level) == ("json", "info")
