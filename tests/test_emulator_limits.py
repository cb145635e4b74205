"""The emulator's per-key RPM and concurrency limits, with the real 429 bodies.

The pure window/in-flight rules are table-tested; the real openai and zhipuai SDKs then hit
the limits of a running emulator whose clock and latency sleep are injected (no real waits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import openai
import pytest
import zhipuai

from providers.emulator.faults import parse_faults
from providers.emulator.ratelimit import KeyLimiter, limit_error
from providers.emulator.server import Emulator
from providers.errors import ConfigError

KIMI_RPM = (
    "Your account org-emu<ak-emu> request reached organization max RPM: 2, "
    "please try again after 1 seconds"
)
KIMI_CONC = (
    "Your account org-emu<ak-emu> request reached organization max concurrency: 1, "
    "please try again after 1 seconds"
)
# GLM writes its full-width commas: they are part of the real text.
GLM_1302 = "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"
GLM_1303 = "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"


class Clock:
    """A settable clock for the emulator's rolling window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Hold:
    """An injected latency sleep that holds each request until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, _seconds: float) -> None:
        self.entered.set()
        await self.release.wait()


# -- the pure rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "rpm", "concurrency"),
    [
        ("kimi:rpm=120,concurrency=4", 120, 4),
        ("glm:concurrency=2,rpm=60,latency=100", 60, 2),
        ("kimi:500@0.1", None, None),
    ],
)
def test_spec_parses_rpm_and_concurrency(
    spec: str, rpm: int | None, concurrency: int | None
) -> None:
    """``rpm=N`` and ``concurrency=N`` set the plan's limits and print back the same."""
    [plan] = parse_faults(spec).values()
    assert (plan.rpm, plan.concurrency) == (rpm, concurrency)
    if rpm is not None:
        assert f"rpm={rpm}" in str(plan)
        assert f"concurrency={concurrency}" in str(plan)


@pytest.mark.parametrize("item", ["rpm=0", "rpm=x", "concurrency=-1", "concurrency=1.5"])
def test_spec_rejects_bad_limits(item: str) -> None:
    """A limit that is not a whole number >= 1 is refused with a message naming it."""
    with pytest.raises(ConfigError, match="whole number >= 1"):
        parse_faults(f"kimi:{item}")


def test_window_counts_admitted_requests_for_60_seconds() -> None:
    """Over the RPM in the last 60 s → rate refusal; refused requests do not count; the
    window rolls: 60 s after the first admitted request there is room again."""
    lim = KeyLimiter()
    assert lim.admit(rpm=2, concurrency=None, now=0.0) is None
    lim.finish()
    assert lim.admit(rpm=2, concurrency=None, now=10.0) is None
    lim.finish()
    assert lim.admit(rpm=2, concurrency=None, now=59.9) == "rate"
    assert lim.admit(rpm=2, concurrency=None, now=59.99) == "rate"
    assert lim.admit(rpm=2, concurrency=None, now=60.0) is None
    lim.finish()
    assert lim.admit(rpm=2, concurrency=None, now=69.0) == "rate"
    assert lim.admit(rpm=2, concurrency=None, now=70.0) is None


def test_in_flight_over_concurrency_is_refused_first() -> None:
    """Requests in flight at the concurrency limit → concurrency refusal (checked before rate)."""
    lim = KeyLimiter()
    assert lim.admit(rpm=1, concurrency=1, now=0.0) is None
    assert lim.admit(rpm=1, concurrency=1, now=1.0) == "concurrency"
    lim.finish()
    assert lim.admit(rpm=1, concurrency=1, now=2.0) == "rate"
    assert lim.admit(rpm=None, concurrency=None, now=2.0) is None


@pytest.mark.parametrize(
    ("provider", "scope", "limit", "body"),
    [
        (
            "kimi",
            "rate",
            120,
            {
                "error": {
                    "message": "Your account org-emu<ak-emu> request reached organization "
                    "max RPM: 120, please try again after 1 seconds",
                    "type": "rate_limit_reached_error",
                }
            },
        ),
        (
            "kimi",
            "concurrency",
            4,
            {
                "error": {
                    "message": "Your account org-emu<ak-emu> request reached organization "
                    "max concurrency: 4, please try again after 1 seconds",
                    "type": "rate_limit_reached_error",
                }
            },
        ),
        ("glm", "concurrency", 2, {"error": {"code": "1302", "message": GLM_1302}}),
        ("glm", "rate", 60, {"error": {"code": "1303", "message": GLM_1303}}),
    ],
)
def test_refusal_bodies_are_the_real_ones(
    provider: str, scope: str, limit: int, body: dict[str, Any]
) -> None:
    """Each refusal is a 429 carrying the provider's real body, byte for byte."""
    error = limit_error(provider, scope, limit)
    assert error.status == 429
    assert error.body(provider) == body


# -- the real SDKs -----------------------------------------------------------------------


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a.txt"
    path.write_bytes(b"hello")
    return path


async def _kimi_upload(emu: Emulator, path: Path) -> Any:
    async with openai.AsyncOpenAI(
        base_url=emu.base_url("kimi"), api_key=emu.key("kimi"), max_retries=0
    ) as client:
        with path.open("rb") as fh:
            return await client.files.create(file=fh, purpose="file-extract")  # type: ignore[arg-type]


async def _glm_upload(emu: Emulator, path: Path) -> Any:
    client = zhipuai.ZhipuAI(api_key=emu.key("glm"), base_url=emu.base_url("glm"), max_retries=0)
    try:
        with path.open("rb") as fh:
            return await anyio.to_thread.run_sync(
                lambda: client.files.create(file=fh, purpose="agent")
            )
    finally:
        client.close()


@pytest.mark.anyio
async def test_openai_kimi_hits_rpm(tmp_path: Path) -> None:
    """The third upload within 60 s of ``kimi:rpm=2`` is a RateLimitError with the real body and
    no Retry-After; a minute later uploads pass again."""
    clock = Clock()
    path = _file(tmp_path)
    async with Emulator(faults="kimi:rpm=2", clock=clock) as emu:
        await _kimi_upload(emu, path)
        await _kimi_upload(emu, path)
        with pytest.raises(openai.RateLimitError) as info:
            await _kimi_upload(emu, path)
        clock.now += 60
        await _kimi_upload(emu, path)
        counts = emu.counts()["kimi"]
    assert info.value.body == {"message": KIMI_RPM, "type": "rate_limit_reached_error"}
    assert "retry-after" not in info.value.response.headers
    assert counts == {"upload.200": 3, "upload.429": 1}


@pytest.mark.anyio
async def test_admitted_upload_times_are_recorded(tmp_path: Path) -> None:
    """``upload_times`` lists the emulator clock's time of each upload ``rpm=`` admitted, not
    the refused ones (the fleet rate test measures its windows from them)."""
    clock = Clock()
    path = _file(tmp_path)
    async with Emulator(faults="kimi:rpm=2", clock=clock) as emu:
        await _kimi_upload(emu, path)
        clock.now += 1.5
        await _kimi_upload(emu, path)
        with pytest.raises(openai.RateLimitError):
            await _kimi_upload(emu, path)
        clock.now += 60
        await _kimi_upload(emu, path)
        times = emu.upload_times("kimi")
        emu.reset()
        after_reset = emu.upload_times("kimi")
    assert times == [1000.0, 1001.5, 1061.5]
    assert after_reset == []


async def _while_one_is_held(
    emu: Emulator, hold: Hold, upload: Callable[[], Coroutine[Any, Any, Any]]
) -> BaseException:
    """Start one upload, wait until the emulator holds it in flight, then upload again."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(upload)
        await hold.entered.wait()
        try:
            await upload()
        except Exception as exc:
            caught: BaseException = exc
        else:
            caught = AssertionError("the second upload passed")
        hold.release.set()
    return caught


@pytest.mark.anyio
async def test_openai_kimi_hits_concurrency(tmp_path: Path) -> None:
    """An upload while ``kimi:concurrency=1`` holds another in flight gets the real
    concurrency body at once; the held one then succeeds."""
    hold = Hold()
    path = _file(tmp_path)
    async with Emulator(faults="kimi:concurrency=1,latency=1", sleep=hold) as emu:
        caught = await _while_one_is_held(emu, hold, lambda: _kimi_upload(emu, path))
        counts = emu.counts()["kimi"]
    assert isinstance(caught, openai.RateLimitError)
    assert caught.body == {"message": KIMI_CONC, "type": "rate_limit_reached_error"}
    assert "retry-after" not in caught.response.headers
    assert counts == {"upload.200": 1, "upload.429": 1}


@pytest.mark.anyio
async def test_zhipuai_glm_hits_rpm_with_1303(tmp_path: Path) -> None:
    """Over ``glm:rpm=1`` zhipuai raises APIReachLimitError with code 1303 and its Chinese text."""
    clock = Clock()
    path = _file(tmp_path)
    async with Emulator(faults="glm:rpm=1", clock=clock) as emu:
        await _glm_upload(emu, path)
        with pytest.raises(zhipuai.APIReachLimitError) as info:
            await _glm_upload(emu, path)
        counts = emu.counts()["glm"]
    assert info.value.response.json() == {"error": {"code": "1303", "message": GLM_1303}}
    assert "retry-after" not in info.value.response.headers
    assert counts == {"upload.200": 1, "upload.429": 1}


@pytest.mark.anyio
async def test_zhipuai_glm_hits_concurrency_with_1302(tmp_path: Path) -> None:
    """An upload while ``glm:concurrency=1`` holds another gets 1302 with its Chinese text."""
    hold = Hold()
    path = _file(tmp_path)
    async with Emulator(faults="glm:concurrency=1,latency=1", sleep=hold) as emu:
        caught = await _while_one_is_held(emu, hold, lambda: _glm_upload(emu, path))
        counts = emu.counts()["glm"]
    assert isinstance(caught, zhipuai.APIReachLimitError)
    assert caught.response.json() == {"error": {"code": "1302", "message": GLM_1302}}
    assert counts == {"upload.200": 1, "upload.429": 1}


@pytest.mark.anyio
async def test_limits_count_uploads_only(tmp_path: Path) -> None:
    """List and delete are not limited: with ``kimi:rpm=1`` used up, listing still answers."""
    clock = Clock()
    path = _file(tmp_path)
    async with Emulator(faults="kimi:rpm=1", clock=clock) as emu:
        created = await _kimi_upload(emu, path)
        async with openai.AsyncOpenAI(
            base_url=emu.base_url("kimi"), api_key=emu.key("kimi"), max_retries=0
        ) as client:
            listed = await client.files.list()
            await client.files.delete(created.id)
        counts = emu.counts()["kimi"]
    assert [f.id for f in listed.data] == [created.id]
    assert counts == {"upload.200": 1, "list.200": 1, "delete.200": 1}


def test_emulator_help_documents_the_limits() -> None:
    """``inboxd emulator --help`` names the rpm= and concurrency= items and their answers."""
    from providers.emulator.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "rpm=N" in text
    assert "concurrency=N" in text
    assert "1303 / 1302" in text
