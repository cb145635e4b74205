"""Extracted text: how a provider's answers become one string, and GLM's parser polling.

Pure pieces (plain values in, a decision out): :func:`content_text` reads a
``/files/{id}/content`` answer, :func:`parser_file_type` names the parser's ``file_type``,
:func:`parser_step` judges one parser result, :func:`poll_delays` is the backoff.
:func:`poll_parser` is the thin async shell that sleeps (injected) between result requests.

Errors: a file the provider cannot extract is ``Permanent(reason="extract_failed")``; a task
still processing past ``ExtractPolicy.give_up_after`` seconds of waiting is ``Retryable``
(try again later: a new task is created then).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from providers.classify import redact
from providers.errors import Permanent, Retryable
from providers.limits import GLM_PARSER_TOOL, GLM_PARSER_TYPES, extension_of
from providers.types import ParserAnswer

__all__ = [
    "ExtractPolicy",
    "content_text",
    "parser_file_type",
    "parser_step",
    "poll_delays",
    "poll_parser",
]


@dataclass(frozen=True)
class ExtractPolicy:
    """How GLM's parser task is waited for.

    The first result request goes out at once; while the task is ``processing`` the next one
    waits ``initial_delay`` seconds, doubling up to ``max_delay``. Once the waits add up to
    more than ``give_up_after`` seconds the extraction is ``Retryable`` (tests set all tiny).
    ``tool_type`` is the parser tool (docs: ``lite``, ``expert``, ``prime``).
    """

    initial_delay: float = 1.0
    max_delay: float = 15.0
    give_up_after: float = 300.0
    tool_type: str = GLM_PARSER_TOOL


def poll_delays(policy: ExtractPolicy) -> Iterator[float]:
    """The waits before the 2nd, 3rd, … result request; stops past ``give_up_after``."""
    delay = max(0.0, policy.initial_delay)
    waited = 0.0
    while waited + delay <= policy.give_up_after:
        yield delay
        waited += delay
        delay = min(policy.max_delay, delay * 2) if delay > 0 else policy.max_delay
        if delay <= 0:  # both zero: one more wait would loop for ever
            return


def content_text(provider: str, data: bytes) -> str:
    """The text of a ``/files/{id}/content`` answer.

    Kimi really answers a JSON envelope whose ``content`` holds the text (provider-facts.md
    § Real answers); anything else (the documented plain text, GLM's batch lines) is the text
    itself, decoded as UTF-8 (undecodable bytes replaced).
    """
    if provider == "kimi":
        try:
            envelope = json.loads(data)
        except ValueError:
            envelope = None
        if isinstance(envelope, dict) and isinstance(envelope.get("content"), str):
            return str(envelope["content"])
    return data.decode("utf-8", errors="replace")


def parser_file_type(provider: str, filename: str) -> str:
    """The parser's ``file_type`` for ``filename`` (its extension, upper case).

    A type the ``lite`` parser does not read is ``Permanent(reason="extract_failed")``.
    """
    ext = extension_of(filename)
    if ext not in GLM_PARSER_TYPES:
        shown = f".{ext}" if ext else "no extension"
        raise Permanent(
            f"{provider}'s file parser cannot read {filename} ({shown}; it reads "
            f"{', '.join(sorted(GLM_PARSER_TYPES))}): no extracted text for this file",
            reason="extract_failed",
            provider=provider,
        )
    return ext.upper()


def parser_step(provider: str, task_id: str, answer: ParserAnswer) -> str | None:
    """The text once the task succeeded; None while it is processing.

    ``failed`` (or a status we do not know) is ``Permanent(reason="extract_failed")``.
    """
    if answer.status == "succeeded":
        return answer.text
    if answer.status == "processing":
        return None
    said = redact(answer.message) or "no message"
    raise Permanent(
        f"{provider}'s file parser failed on this file (task {task_id}, status "
        f"{answer.status!r}: {said}); the same bytes fail again: check that the file opens",
        reason="extract_failed",
        provider=provider,
        code=answer.status,
    )


async def poll_parser(
    provider: str,
    task_id: str,
    result: Callable[[], Awaitable[ParserAnswer]],
    policy: ExtractPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> str:
    """Ask ``result()`` until the task is done, sleeping ``poll_delays`` between asks."""
    waited = 0.0
    delays = poll_delays(policy)
    while True:
        text = parser_step(provider, task_id, await result())
        if text is not None:
            return text
        delay = next(delays, None)
        if delay is None:
            raise Retryable(
                f"{provider}'s file parser is still processing task {task_id} after "
                f"{waited:g} s of waiting; the text is fetched again later",
                provider=provider,
            )
        await sleep(delay)
        waited += delay
