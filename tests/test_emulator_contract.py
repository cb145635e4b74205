"""Contract tests: the real openai and zhipuai SDKs and raw httpx against a running Emulator."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
import zhipuai

from providers.classify import classify
from providers.emulator.server import Emulator
from providers.errors import Permanent, ProviderError, QuotaExhausted, Throttled
from providers.limits import KIMI_LIMITS, MIB
from providers.waits import CHINA_TZ, next_china_midnight


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A running emulator with the default keys and no faults."""
    async with Emulator() as emulator:
        yield emulator


def _kimi(emu: Emulator, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=emu.base_url("kimi"), api_key=key or emu.key("kimi"), max_retries=0
    )


def _glm(emu: Emulator, key: str | None = None) -> zhipuai.ZhipuAI:
    return zhipuai.ZhipuAI(
        api_key=key or emu.key("glm"), base_url=emu.base_url("glm"), max_retries=0
    )


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _sparse(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.touch()
    os.truncate(path, size)
    return path


async def _kimi_upload(emu: Emulator, path: Path, purpose: str = "file-extract") -> Any:
    async with _kimi(emu) as client:
        with path.open("rb") as fh:
            return await client.files.create(
                file=(path.name, fh, "application/octet-stream"),
                purpose=purpose,  # type: ignore[arg-type]
            )


async def _glm_call(emu: Emulator, fn: str, key: str | None = None, **kw: Any) -> Any:
    client = _glm(emu, key)
    try:
        return await anyio.to_thread.run_sync(lambda: getattr(client.files, fn)(**kw))
    finally:
        client.close()


async def _glm_upload(emu: Emulator, path: Path, purpose: str, key: str | None = None) -> Any:
    with path.open("rb") as fh:
        return await _glm_call(
            emu, "create", key, file=(path.name, fh, "application/octet-stream"), purpose=purpose
        )


# -- Moonshot through the openai SDK -------------------------------------------------


@pytest.mark.anyio
async def test_openai_kimi_every_endpoint(emu: Emulator, tmp_path: Path) -> None:
    """Upload, list, retrieve, content and delete answer Moonshot's documented fields."""
    path = _write(tmp_path, "notes.md", b"# hello\n")
    created = await _kimi_upload(emu, path)
    assert (created.object, created.bytes, created.filename) == ("file", 8, "notes.md")
    assert (created.purpose, created.status, created.status_details) == ("file-extract", "ok", "")
    assert isinstance(created.created_at, int)
    async with _kimi(emu) as client:
        listed = await client.files.list()
        assert [f.id for f in listed.data] == [created.id]
        assert (await client.files.retrieve(created.id)).filename == "notes.md"
        content = await client.files.content(created.id)
        assert content.json() == {
            "content": "# hello\n",
            "file_type": "text/markdown",
            "filename": "notes.md",
            "title": "",
            "type": "file",
        }
        deleted = await client.files.delete(created.id)
        assert (deleted.id, deleted.deleted) == (created.id, True)
        with pytest.raises(openai.NotFoundError) as info:
            await client.files.retrieve(created.id)
    assert info.value.body == {
        "type": "resource_not_found_error",
        "message": f"File not found: {created.id}",
    }
    [truth] = [f for f in emu.counts()["kimi"].items() if f[0] == "upload.200"]
    assert truth == ("upload.200", 1)
    assert emu.files() == []


@pytest.mark.anyio
async def test_openai_kimi_ground_truth(emu: Emulator, tmp_path: Path) -> None:
    """The admin ground truth holds the uploaded file's sha256, size, name and purpose."""
    data = os.urandom(5000)
    created = await _kimi_upload(emu, _write(tmp_path, "a.pdf", data))
    [stored] = emu.files()
    assert (stored.provider, stored.id, stored.bytes) == ("kimi", created.id, 5000)
    assert (stored.sha256, stored.filename) == (hashlib.sha256(data).hexdigest(), "a.pdf")
    async with httpx.AsyncClient() as raw:
        listed = (await raw.get(f"http://127.0.0.1:{emu.port}/_emulator/files")).json()
    assert listed["files"][0]["sha256"] == stored.sha256


@pytest.mark.parametrize(
    ("name", "size", "purpose", "message"),
    [
        (
            "a.pdf",
            10,
            "assistants",
            "Invalid purpose: only 'file-extract', 'image', 'video', 'batch' accepted",
        ),
        ("a.pdf", 0, "file-extract", "File size is zero, please confirm and re-upload the file"),
        (
            "a.pdf",
            100 * MIB + 1,
            "file-extract",
            "File size is too large, max file size is 100MB, please confirm and re-upload the file",
        ),
        (
            "a.exe",
            10,
            "file-extract",
            "File type not supported for purpose 'file-extract': .exe not in",
        ),
    ],
)
@pytest.mark.anyio
async def test_openai_kimi_refusals(
    emu: Emulator, tmp_path: Path, *, name: str, size: int, purpose: str, message: str
) -> None:
    """Each refused upload is openai.BadRequestError with Moonshot's type and message."""
    path = _sparse(tmp_path, name, size)
    with pytest.raises(openai.BadRequestError) as info:
        await _kimi_upload(emu, path, purpose)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert info.value.body["message"].startswith(message)  # type: ignore[index]
    assert emu.files() == []


@pytest.mark.anyio
async def test_openai_kimi_file_count_quota(tmp_path: Path) -> None:
    """Past max_files the next upload is 400 with the documented file-count message."""
    limits = {"kimi": KIMI_LIMITS.with_overrides({}, max_files=2)}
    async with Emulator(limits=limits) as emu:
        path = _write(tmp_path, "a.txt", b"x")
        await _kimi_upload(emu, path)
        await _kimi_upload(emu, path)
        with pytest.raises(openai.BadRequestError) as info:
            await _kimi_upload(emu, path)
    assert info.value.body["message"] == (  # type: ignore[index]
        "The number of files you have uploaded exceeded the max file count 2, please delete "
        "previous uploaded files"
    )


@pytest.mark.anyio
async def test_openai_kimi_wrong_key(emu: Emulator, tmp_path: Path) -> None:
    """A wrong key is openai.AuthenticationError with invalid_authentication_error."""
    async with _kimi(emu, "sk-wrong") as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.files.list()
    assert info.value.status_code == 401
    assert info.value.body == {
        "type": "invalid_authentication_error",
        "message": "Invalid Authentication",
    }


@pytest.mark.anyio
async def test_openai_kimi_content_only_file_extract(emu: Emulator, tmp_path: Path) -> None:
    """Content of a non-file-extract file is a 400, not extracted text."""
    created = await _kimi_upload(emu, _write(tmp_path, "a.jsonl", b"{}\n"), "batch")
    async with _kimi(emu) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.files.content(created.id)
    assert info.value.body["message"] == (  # type: ignore[index]
        "File content is only available for purpose file-extract"
    )


@pytest.mark.anyio
async def test_openai_glm_base_url_works(emu: Emulator, tmp_path: Path) -> None:
    """The openai SDK pointed at the GLM base uploads with a GLM FileObject (no status)."""
    async with openai.AsyncOpenAI(
        base_url=emu.base_url("glm"), api_key=emu.key("glm"), max_retries=0
    ) as client:
        with _write(tmp_path, "a.pdf", b"%PDF").open("rb") as fh:
            created = await client.files.create(
                file=("a.pdf", fh, "application/pdf"),
                purpose="agent",  # type: ignore[arg-type]
            )
    fields: tuple[Any, ...] = (created.purpose, created.bytes, created.status)
    assert fields == ("agent", 4, None)


# -- GLM through the zhipuai SDK ---------------------------------------------------------


@pytest.mark.anyio
async def test_zhipuai_every_endpoint(emu: Emulator, tmp_path: Path) -> None:
    """zhipuai create, paginated list, content and delete against the GLM paths."""
    ids = []
    for i in range(3):
        created = await _glm_upload(emu, _write(tmp_path, f"b{i}.jsonl", b'{"a":1}\n'), "batch")
        assert (created.object, created.bytes, created.purpose) == ("file", 8, "batch")
        ids.append(created.id)
    page = await _glm_call(emu, "list", purpose="batch", limit=2)
    assert [f.id for f in page.data] == [ids[2], ids[1]]
    assert page.has_more is True
    rest = await _glm_call(emu, "list", purpose="batch", limit=2, after=ids[1])
    assert ([f.id for f in rest.data], rest.has_more) == ([ids[0]], False)
    content = await _glm_call(emu, "content", file_id=ids[0])
    assert content.content == b'{"a":1}\n'
    deleted = await _glm_call(emu, "delete", file_id=ids[0])
    assert (deleted.id, deleted.deleted) == (ids[0], True)
    assert [f.id for f in emu.files()] == ids[1:]


@pytest.mark.parametrize(
    ("name", "size", "purpose", "status", "needle"),
    [
        ("a.pdf", 10, "file", 400, "Invalid purpose 'file'"),
        ("a.jsonl", 100 * MIB + 1, "batch", 435, "File size exceeds 100MB"),
        ("a.pdf", 20 * MIB + 1, "agent", 400, "File size too large for purpose 'agent'"),
        ("a.mp4", 10, "agent", 400, "File type not supported for purpose 'agent'"),
        ("a.pdf", 0, "agent", 400, "File size is zero"),
    ],
)
@pytest.mark.anyio
async def test_zhipuai_refusals(
    emu: Emulator,
    tmp_path: Path,
    *,
    name: str,
    size: int,
    purpose: str,
    status: int,
    needle: str,
) -> None:
    """Refusals reach zhipuai as APIStatusError with GLM's string code 1214."""
    with pytest.raises(zhipuai.APIStatusError) as info:
        await _glm_upload(emu, _sparse(tmp_path, name, size), purpose)
    assert info.value.status_code == status
    error = info.value.response.json()["error"]
    assert error["code"] == "1214"
    assert needle in error["message"]
    if status == 400:
        assert isinstance(info.value, zhipuai.APIRequestFailedError)


@pytest.mark.anyio
async def test_zhipuai_wrong_key(emu: Emulator, tmp_path: Path) -> None:
    """A wrong GLM key is APIAuthenticationError with code "1002"."""
    with pytest.raises(zhipuai.APIAuthenticationError) as info:
        await _glm_upload(emu, _write(tmp_path, "a.pdf", b"x"), "agent", key="bad.key")
    assert info.value.response.json() == {
        "error": {"code": "1002", "message": "Invalid Authorization token"}
    }


# -- raw httpx ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_httpx_upload_streams_and_missing_boundary(emu: Emulator, tmp_path: Path) -> None:
    """httpx multipart uploads work; a hand-set Content-Type without boundary is a 400."""
    headers = {"Authorization": f"Bearer {emu.key('glm')}"}
    url = f"{emu.base_url('glm')}/files"
    async with httpx.AsyncClient() as raw:
        with _write(tmp_path, "a.csv", b"a,b\n").open("rb") as fh:
            ok = await raw.post(
                url,
                headers=headers,
                files={"file": ("a.csv", fh, "text/csv")},
                data={"purpose": "agent"},
            )
        assert ok.status_code == 200
        assert set(ok.json()) == {"id", "object", "bytes", "created_at", "filename", "purpose"}
        with _write(tmp_path, "b.csv", b"a,b\n").open("rb") as fh:
            bad = await raw.post(
                url,
                headers={**headers, "Content-Type": "multipart/form-data"},
                files={"file": ("b.csv", fh, "text/csv")},
                data={"purpose": "agent"},
            )
        missing = await raw.post(url, headers=headers, data={"purpose": "agent"})
        no_auth = await raw.get(url)
    assert bad.status_code == 400
    assert bad.json() == {
        "error": {
            "code": "1214",
            "message": "Content-Type must be multipart/form-data with a boundary",
        }
    }
    assert missing.status_code == 400
    assert no_auth.json()["error"]["code"] == "1001"
    assert len(emu.files()) == 1


@pytest.mark.anyio
async def test_httpx_glm_bad_list_query(emu: Emulator) -> None:
    """GLM list with limit 101 is a 400 with code 1214."""
    async with httpx.AsyncClient() as raw:
        resp = await raw.get(
            f"{emu.base_url('glm')}/files",
            params={"limit": 101},
            headers={"Authorization": f"Bearer {emu.key('glm')}"},
        )
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "1214")


# -- the providers' real answers (provider-facts.md § Real answers) ---------------------


def _classified(status: int, response: Any, provider: str) -> ProviderError:
    return classify(provider, status, response.json(), response.headers, now=time.time())


@pytest.mark.parametrize(
    ("fault", "error", "status", "body", "expected"),
    [
        (
            "429msg:2",
            openai.RateLimitError,
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account org-emulator<ak-emulator> request reached organization "
                "max RPM: 3, please try again after 2 seconds",
            },
            {"kind": Throttled, "scope": "rate", "limit": 3, "retry_after": 2.0},
        ),
        (
            "429conc",
            openai.RateLimitError,
            429,
            {
                "type": "rate_limit_reached_error",
                "message": "Your account org-emulator<ak-emulator> request reached organization "
                "max concurrency: 1, please try again after 1 seconds",
            },
            {"kind": Throttled, "scope": "concurrency", "limit": 1, "retry_after": 1.0},
        ),
        (
            "balance",
            openai.PermissionDeniedError,
            403,
            {
                "type": "permission_denied_error",
                "message": "Your account org-emulator<ak-emulator> has insufficient balance, "
                "please recharge your account",
            },
            {"kind": QuotaExhausted, "balance": True},
        ),
        (
            "extract",
            openai.InternalServerError,
            500,
            {"message": "extract task failed: failed", "type": ""},
            {"kind": Permanent, "reason": "extract_failed"},
        ),
    ],
)
@pytest.mark.anyio
async def test_openai_kimi_real_answers(
    emu: Emulator,
    tmp_path: Path,
    *,
    fault: str,
    error: type[openai.APIStatusError],
    status: int,
    body: dict[str, str],
    expected: dict[str, Any],
) -> None:
    """Kimi's real error bodies reach openai as sent (no Retry-After) and classify right."""
    emu.set_faults("kimi", fault)
    with pytest.raises(error) as info:
        await _kimi_upload(emu, _write(tmp_path, "a.txt", b"x"))
    assert info.value.status_code == status
    assert info.value.body == body
    assert "retry-after" not in info.value.response.headers
    got = _classified(status, info.value.response, "kimi")
    assert type(got) is expected.pop("kind")
    assert {k: getattr(got, k) for k in expected} == expected
    assert emu.files() == []


GLM_1302 = "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"
GLM_1303 = "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"


@pytest.mark.parametrize(
    ("fault", "code", "message", "expected"),
    [
        ("429msg", "1303", GLM_1303, {"kind": Throttled, "scope": "rate", "retry_after": None}),
        ("429conc", "1302", GLM_1302, {"kind": Throttled, "scope": "concurrency"}),
        (
            "balance",
            "1113",
            "您的账户已欠费，请充值后重试。",
            {"kind": QuotaExhausted, "balance": True},
        ),
        (
            "daily",
            "1304",
            "该 API 已达今日调用次数限额",
            {"kind": QuotaExhausted, "until": next_china_midnight},
        ),
    ],
)
@pytest.mark.anyio
async def test_zhipuai_real_answers(
    emu: Emulator,
    tmp_path: Path,
    *,
    fault: str,
    code: str,
    message: str,
    expected: dict[str, Any],
) -> None:
    """GLM's real Chinese answers reach zhipuai as sent (no Retry-After) and classify right."""
    emu.set_faults("glm", fault)
    before = time.time()
    with pytest.raises(zhipuai.APIReachLimitError) as info:
        await _glm_upload(emu, _write(tmp_path, "a.pdf", b"%PDF"), "agent")
    response = info.value.response
    assert response.status_code == 429
    assert response.json() == {"error": {"code": code, "message": message}}
    assert "retry-after" not in response.headers
    got = classify("glm", 429, response.json(), response.headers, now=before)
    assert type(got) is expected.pop("kind")
    if callable(expected.get("until")):
        expected["until"] = expected["until"](before)
    assert {k: getattr(got, k) for k in expected} == expected
    assert emu.files() == []


@pytest.mark.anyio
async def test_zhipuai_usage_cap_names_its_reset_time(emu: Emulator, tmp_path: Path) -> None:
    """GLM 1308 names its reset time (China time), and that time is when the park ends."""
    emu.set_faults("glm", "cap")
    before = time.time()
    with pytest.raises(zhipuai.APIReachLimitError) as info:
        await _glm_upload(emu, _write(tmp_path, "a.pdf", b"%PDF"), "agent")
    error = info.value.response.json()["error"]
    assert error["code"] == "1308"
    reset = datetime.fromtimestamp(next_china_midnight(before), CHINA_TZ)
    assert error["message"] == (
        f"已达到 5 小时的使用上限。您的限额将在 {reset:%Y-%m-%d %H:%M:%S} 重置。"
    )
    got = classify("glm", 429, info.value.response.json(), {}, now=before)
    assert isinstance(got, QuotaExhausted)
    assert got.until == next_china_midnight(before)


@pytest.mark.anyio
async def test_openai_kimi_auto_pager_ends(emu: Emulator, tmp_path: Path) -> None:
    """openai's auto-pager over Kimi's list (no has_more) stops: the list honours ``after``."""
    ids = [(await _kimi_upload(emu, _write(tmp_path, f"{i}.txt", b"x"))).id for i in range(3)]
    async with _kimi(emu) as client:
        with anyio.fail_after(30):  # a bound against an endless loop, not a timing assertion
            seen = [f.id async for f in client.files.list()]
    assert seen == ids


@pytest.mark.anyio
async def test_zhipuai_list_requires_purpose(emu: Emulator, tmp_path: Path) -> None:
    """GLM refuses a list without ``purpose`` (400, 1214) and accepts order=created_at."""
    created = await _glm_upload(emu, _write(tmp_path, "a.pdf", b"%PDF"), "agent")
    with pytest.raises(zhipuai.APIRequestFailedError) as info:
        await _glm_call(emu, "list")
    assert info.value.response.status_code == 400
    assert info.value.response.json() == {
        "error": {"code": "1214", "message": "参数 purpose 不能为空"}
    }
    page = await _glm_call(emu, "list", purpose="agent", order="created_at")
    assert [f.id for f in page.data] == [created.id]


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ('say "hi".txt', "say %22hi%22.txt"),  # httpx writes '"' as %22; nobody decodes it
        ("a\\b.txt", "a\\b.txt"),  # written as a quoted-pair "\\\\", read back as one "\\"
        ("\\lead.txt", "\\lead.txt"),
        ("100%.txt", "100%.txt"),
        ("100%22.txt", "100%22.txt"),
        ("a;b;c.txt", "a;b;c.txt"),
        ("a=b; c.txt", "a=b; c.txt"),
        ("résumé 文件.txt", "résumé 文件.txt"),
    ],
)
@pytest.mark.anyio
async def test_stored_name_is_the_wire_name(emu: Emulator, name: str, stored: str) -> None:
    """The emulator stores the multipart filename as sent: quoted-string read, nothing else."""
    async with httpx.AsyncClient() as raw:
        resp = await raw.post(
            f"{emu.base_url('kimi')}/files",
            headers={"Authorization": f"Bearer {emu.key('kimi')}"},
            files={"file": (name, b"x", "text/plain")},
            data={"purpose": "file-extract"},
        )
    assert (resp.status_code, resp.json()["filename"]) == (200, stored)
    assert [f.filename for f in emu.files()] == [stored]
