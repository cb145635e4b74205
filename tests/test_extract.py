"""The pure parts of extraction: which purposes have text, reading answers, parser polling."""

from __future__ import annotations

import json

import pytest

from providers.errors import Permanent, Retryable
from providers.extract import (
    ExtractPolicy,
    content_text,
    parser_file_type,
    parser_step,
    poll_delays,
    poll_parser,
)
from providers.limits import GLM_LIMITS, KIMI_LIMITS, extract_method, extract_supported
from providers.transports._common import parser_answer, parser_task
from providers.types import ParserAnswer


@pytest.mark.parametrize(
    ("provider", "purpose", "method"),
    [
        ("kimi", "file-extract", "content"),
        ("kimi", "image", None),
        ("kimi", "video", None),
        ("kimi", "batch", None),
        ("glm", "batch", "content"),
        ("glm", "file-extract", "content"),
        ("glm", "agent", "parser"),
        ("glm", "code-interpreter", "parser"),
        ("glm", "voice-clone-input", None),
        ("glm", "fine-tune", None),
        ("other", "file-extract", None),
    ],
)
def test_extract_method(provider: str, purpose: str, method: str | None) -> None:
    """Each documented purpose gets its text by content, by the parser, or not at all."""
    assert extract_method(provider, purpose) == method
    assert extract_supported(provider, purpose) is (method is not None)


def test_every_documented_purpose_is_decided() -> None:
    """The purposes with text are exactly Kimi file-extract and GLM batch/file-extract/
    code-interpreter/agent."""
    supported = {
        (p.provider, purpose)
        for p in (KIMI_LIMITS, GLM_LIMITS)
        for purpose in p.purposes
        if extract_supported(p.provider, purpose)
    }
    assert supported == {
        ("kimi", "file-extract"),
        ("glm", "batch"),
        ("glm", "file-extract"),
        ("glm", "code-interpreter"),
        ("glm", "agent"),
    }


@pytest.mark.parametrize(
    ("provider", "data", "text"),
    [
        (
            "kimi",
            json.dumps(
                {"content": "正文\n", "file_type": "application/pdf", "type": "file"}
            ).encode(),
            "正文\n",
        ),
        ("kimi", b"plain text as documented", "plain text as documented"),
        ("kimi", b'{"no_content": 1}', '{"no_content": 1}'),
        ("kimi", b'{"content": 5}', '{"content": 5}'),
        ("glm", b'{"content": "x"}', '{"content": "x"}'),
        ("glm", b"bad \xff byte", "bad \ufffd byte"),
    ],
)
def test_content_text(provider: str, data: bytes, text: str) -> None:
    """Kimi's envelope is unwrapped; anything else is the body as UTF-8 (bad bytes replaced)."""
    assert content_text(provider, data) == text


def test_parser_file_type() -> None:
    """The parser's file_type is the extension upper-cased; an unread type is extract_failed."""
    assert parser_file_type("glm", "Report.Final.docx") == "DOCX"
    with pytest.raises(Permanent) as info:
        parser_file_type("glm", "voice.mp3")
    assert info.value.reason == "extract_failed"
    assert "cannot read voice.mp3 (.mp3;" in info.value.message


def test_parser_step() -> None:
    """succeeded gives the text, processing None, failed a Permanent extract_failed."""
    assert parser_step("glm", "t", ParserAnswer("succeeded", "text")) == "text"
    assert parser_step("glm", "t", ParserAnswer("processing")) is None
    with pytest.raises(Permanent) as info:
        parser_step("glm", "t9", ParserAnswer("failed", message="文件解析失败"))
    assert info.value.reason == "extract_failed"
    assert "task t9, status 'failed': 文件解析失败" in info.value.message


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (ExtractPolicy(initial_delay=1, max_delay=4, give_up_after=20), [1, 2, 4, 4, 4, 4]),
        (ExtractPolicy(initial_delay=1, max_delay=8, give_up_after=0.5), []),
        (ExtractPolicy(initial_delay=0, max_delay=0, give_up_after=0), [0]),
        (ExtractPolicy(initial_delay=0, max_delay=1, give_up_after=2), [0, 1, 1]),
    ],
)
def test_poll_delays(policy: ExtractPolicy, delays: list[float]) -> None:
    """Waits double from initial_delay up to max_delay and stop before passing give_up_after."""
    assert list(poll_delays(policy)) == delays


@pytest.mark.anyio
async def test_poll_parser_waits_between_processing_answers() -> None:
    """Each processing answer is followed by the next backoff wait, then the text comes."""
    answers = iter(
        [ParserAnswer("processing"), ParserAnswer("processing"), ParserAnswer("succeeded", "T")]
    )
    slept: list[float] = []

    async def result() -> ParserAnswer:
        return next(answers)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = ExtractPolicy(initial_delay=0.5, max_delay=0.75, give_up_after=10)
    assert await poll_parser("glm", "t1", result, policy, sleep) == "T"
    assert slept == [0.5, 0.75]


@pytest.mark.anyio
async def test_poll_parser_gives_up_retryable() -> None:
    """A task still processing once the waits pass give_up_after is Retryable, not Permanent."""
    slept: list[float] = []

    async def result() -> ParserAnswer:
        return ParserAnswer("processing")

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = ExtractPolicy(initial_delay=1, max_delay=2, give_up_after=5)
    with pytest.raises(Retryable) as info:
        await poll_parser("glm", "t1", result, policy, sleep)
    assert slept == [1, 2, 2]
    assert "still processing task t1 after 5 s of waiting" in info.value.message


def test_parser_task_and_answer_readers() -> None:
    """Create answers give the task id (success false: extract_failed; no id: Retryable);
    result bodies become ParserAnswers (no status: Retryable)."""
    assert parser_task("glm", {"task_id": "t1", "success": True, "message": "ok"}) == "t1"
    with pytest.raises(Permanent) as refused:
        parser_task("glm", {"success": False, "message": "bad file"})
    assert refused.value.reason == "extract_failed"
    with pytest.raises(Retryable):
        parser_task("glm", {"message": "?"})
    body = {"status": "succeeded", "content": "x", "message": "m", "task_id": "t1"}
    assert parser_answer("glm", json.dumps(body).encode()) == ParserAnswer("succeeded", "x", "m")
    with pytest.raises(Retryable):
        parser_answer("glm", b"<html>gateway</html>")
