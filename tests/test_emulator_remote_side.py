"""The emulator's remote side: GLM's file parser, deletes, the Kimi account cap, served text.

Driven with the real SDKs (zhipuai ``file_parser``, openai ``files``) and raw httpx over
loopback.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import openai
import pytest
import zhipuai

from providers.emulator.parser import ParserTask, judge_parse, result_answer
from providers.emulator.server import Emulator
from providers.emulator.state import Occupancy, judge_upload
from providers.limits import KIMI_LIMITS, MIB


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """A running emulator whose parser tasks answer ``processing`` twice."""
    async with Emulator(parser_polls=2) as emulator:
        yield emulator


def _glm(emu: Emulator) -> zhipuai.ZhipuAI:
    return zhipuai.ZhipuAI(api_key=emu.key("glm"), base_url=emu.base_url("glm"), max_retries=0)


async def _parser(emu: Emulator, fn: str, *args: Any, **kw: Any) -> Any:
    client = _glm(emu)
    try:
        return await anyio.to_thread.run_sync(lambda: getattr(client.file_parser, fn)(*args, **kw))
    finally:
        client.close()


async def _glm_files(emu: Emulator, fn: str, **kw: Any) -> Any:
    client = _glm(emu)
    try:
        return await anyio.to_thread.run_sync(lambda: getattr(client.files, fn)(**kw))
    finally:
        client.close()


def _kimi(emu: Emulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=emu.base_url("kimi"), api_key=emu.key("kimi"), max_retries=0)


# -- GLM's file parser, through zhipuai ---------------------------------------------------


@pytest.mark.anyio
async def test_zhipuai_parser_task_processes_then_serves_the_text(emu: Emulator) -> None:
    """A parser task answers ``processing`` for ``parser_polls`` polls, then the file's text."""
    data = "第一行\nsecond line\n".encode()
    created = await _parser(
        emu,
        "create",
        file=("notes.txt", io.BytesIO(data), "text/plain"),
        file_type="TXT",
        tool_type="lite",
    )
    assert (created.success, created.message) == (True, "任务创建成功")
    answers = [
        json.loads((await _parser(emu, "content", created.task_id, format_type="text")).content)
        for _ in range(3)
    ]
    assert [a["status"] for a in answers] == ["processing", "processing", "succeeded"]
    assert answers[2] == {
        "status": "succeeded",
        "message": "结果获取成功",
        "task_id": created.task_id,
        "content": "第一行\nsecond line\n",
    }
    assert emu.counts()["glm"] == {"parse.200": 1, "parse_result.200": 3}


@pytest.mark.anyio
async def test_zhipuai_parsefail_fault_ends_the_task_failed(emu: Emulator) -> None:
    """The ``parsefail`` fault makes the task it creates end ``failed`` after processing."""
    emu.set_faults("glm", "parsefail")
    created = await _parser(
        emu,
        "create",
        file=("a.pdf", io.BytesIO(b"%PDF-1.4"), "application/pdf"),
        file_type="PDF",
        tool_type="lite",
    )
    statuses = [
        json.loads((await _parser(emu, "content", created.task_id, format_type="text")).content)[
            "status"
        ]
        for _ in range(3)
    ]
    assert statuses == ["processing", "processing", "failed"]


@pytest.mark.anyio
async def test_zhipuai_parser_refuses_a_type_it_cannot_read(emu: Emulator) -> None:
    """An mp3 given to the lite parser is 400 code 1214 naming 文件解析; no task is made."""
    with pytest.raises(zhipuai.APIRequestFailedError) as info:
        await _parser(
            emu,
            "create",
            file=("a.mp3", io.BytesIO(b"ID3"), "audio/mpeg"),
            file_type="MP3",
            tool_type="lite",
        )
    assert info.value.response.json() == {
        "error": {"code": "1214", "message": "文件解析不支持该文件类型: 'MP3' (tool_type lite)"}
    }


@pytest.mark.anyio
async def test_parser_transient_fault_is_a_500(emu: Emulator) -> None:
    """A ``500`` fault on a result poll answers 500 and leaves the task to finish later."""
    async with httpx.AsyncClient(
        base_url=emu.base_url("glm") + "/", headers={"Authorization": f"Bearer {emu.key('glm')}"}
    ) as raw:
        created = await raw.post(
            "files/parser/create",
            data={"tool_type": "lite", "file_type": "MD"},
            files={"file": ("a.md", b"# t\n", "text/markdown")},
        )
        task_id = created.json()["task_id"]
        emu.set_faults("glm", "seq=500")
        failed = await raw.get(f"files/parser/result/{task_id}/text")
        unknown = await raw.get("files/parser/result/nope/text")
        later = [(await raw.get(f"files/parser/result/{task_id}/text")).json() for _ in range(3)]
    assert failed.status_code == 500
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "1214")
    assert [a["status"] for a in later] == ["processing", "processing", "succeeded"]


def test_parser_pure_judgement() -> None:
    """judge_parse accepts Lite's types (any case) and refuses an unknown tool; a result
    spends one poll per processing answer."""
    assert judge_parse("lite", "DOCX") is None
    assert judge_parse("expert", "DOCX") is not None
    refused = judge_parse("turbo", "PDF")
    assert refused is not None
    assert (refused.status, refused.code) == (400, "1214")
    task = ParserTask("t1", "text", polls_left=1)
    assert result_answer(task)["status"] == "processing"
    assert result_answer(task) == {
        "status": "succeeded",
        "message": "结果获取成功",
        "task_id": "t1",
        "content": "text",
    }


# -- deletes ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_openai_kimi_delete_answers_and_404_for_unknown_id(emu: Emulator) -> None:
    """Kimi DELETE answers ``{"id","object":"file","deleted":true}``; an unknown id is 404."""
    stored = emu.add_file("kimi", "a.txt", b"hello")
    async with _kimi(emu) as client:
        deleted = await client.files.delete(stored.id)
        with pytest.raises(openai.NotFoundError) as info:
            await client.files.delete(stored.id)
    assert deleted.model_dump() == {"id": stored.id, "object": "file", "deleted": True}
    assert info.value.body == {
        "type": "resource_not_found_error",
        "message": f"File not found: {stored.id}",
    }
    assert emu.files() == []


@pytest.mark.anyio
async def test_zhipuai_glm_delete_answers_and_404_for_unknown_id(emu: Emulator) -> None:
    """GLM DELETE answers the same body; an unknown id is 404 with code 1214."""
    stored = emu.add_file("glm", "rows.jsonl", b'{"a":1}\n', purpose="batch")
    deleted = await _glm_files(emu, "delete", file_id=stored.id)
    with pytest.raises(zhipuai.APIStatusError) as info:
        await _glm_files(emu, "delete", file_id=stored.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (stored.id, "file", True)
    assert info.value.response.status_code == 404
    assert info.value.response.json() == {
        "error": {"code": "1214", "message": f"File not found: {stored.id}"}
    }


# -- the faithful Kimi cap ------------------------------------------------------------------


@pytest.mark.anyio
async def test_default_kimi_account_refuses_the_1001st_file(emu: Emulator) -> None:
    """With the documented limits, a Kimi account holding 1,000 files refuses the next upload
    with the documented file-count answer, and takes it again once one is deleted."""
    stored = [emu.add_file("kimi", f"f{i}.txt", b"x") for i in range(1000)]
    async with _kimi(emu) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.files.create(
                file=("new.txt", io.BytesIO(b"new"), "text/plain"),
                purpose="file-extract",  # type: ignore[arg-type]
            )
        await client.files.delete(stored[0].id)
        created = await client.files.create(
            file=("new.txt", io.BytesIO(b"new"), "text/plain"),
            purpose="file-extract",  # type: ignore[arg-type]
        )
    assert info.value.body == {
        "type": "invalid_request_error",
        "message": "The number of files you have uploaded exceeded the max file count 1000, "
        "please delete previous uploaded files",
    }
    assert created.filename == "new.txt"
    assert len(emu.files()) == 1000


def test_default_kimi_limits_refuse_past_10_gb() -> None:
    """The documented 10 GB total: a file that would pass it is refused; one that fits is not."""
    total = 10 * 1024 * MIB
    usage = Occupancy(files=5, bytes=total - 10, by_purpose={"file-extract": 5})
    refused = judge_upload(KIMI_LIMITS, "file-extract", "a.txt", 11, usage)
    assert refused is not None
    assert (refused.status, refused.code) == (400, "invalid_request_error")
    assert "exceeded the max size 10240MB" in refused.message
    assert judge_upload(KIMI_LIMITS, "file-extract", "a.txt", 10, usage) is None


# -- the text a test compares with ---------------------------------------------------------


@pytest.mark.anyio
async def test_extracted_text_is_what_each_endpoint_serves(emu: Emulator) -> None:
    """``Emulator.extracted_text`` equals Kimi's envelope content and GLM's content answer."""
    kimi_txt = emu.add_file("kimi", "a.md", "# 标题\n".encode())
    kimi_pdf = emu.add_file("kimi", "b.pdf", b"%PDF-1.4 ...")
    glm_batch = emu.add_file("glm", "r.jsonl", b'{"a":1}\n', purpose="batch")
    async with _kimi(emu) as client:
        served = [
            (await client.files.content(f.id)).json()["content"] for f in (kimi_txt, kimi_pdf)
        ]
    glm_served = (await _glm_files(emu, "content", file_id=glm_batch.id)).content.decode()
    assert served == [emu.extracted_text(kimi_txt.id), emu.extracted_text(kimi_pdf.id)]
    assert served == ["# 标题\n", "[emulator: extracted text of b.pdf, 12 bytes]"]
    assert glm_served == emu.extracted_text(glm_batch.id) == '{"a":1}\n'


@pytest.mark.anyio
async def test_extracted_text_refuses_unknown_ids_and_textless_purposes(emu: Emulator) -> None:
    """An unknown id is KeyError; a Kimi image file (no text) is ValueError."""
    image = emu.add_file("kimi", "a.png", b"\x89PNG", purpose="image")
    with pytest.raises(KeyError):
        emu.extracted_text("nope")
    with pytest.raises(ValueError, match="no text for purpose 'image'"):
        emu.extracted_text(image.id)
