"""What every transport shares: the "was it sent?" probe, error translation, normalising.

The probe is an HTTP ``request`` event hook installed on the HTTP client under each SDK (and
called by hand in the raw transport): it fires when the request is handed to the HTTP layer,
after the SDK has built it. A failure before the hook fired certainly never reached the server.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from providers.classify import classify, redact
from providers.errors import Permanent, ProviderError, Retryable, TransportUnavailable
from providers.limits import GLM_LIMITS
from providers.types import ParserAnswer, RemoteFile

__all__ = [
    "GLM_PAGE_LIMIT",
    "Clock",
    "SendProbe",
    "answer_file",
    "attempt",
    "collect_listing",
    "collect_pages",
    "find_listed",
    "from_status",
    "listing_purposes",
    "mark_sent",
    "mark_sent_async",
    "now_clock",
    "page_params",
    "parser_answer",
    "parser_task",
    "remote_file",
    "scrub",
    "sum_listing",
    "sum_pages",
    "translate",
    "unavailable",
]

Clock = Callable[[], float]
GLM_PAGE_LIMIT = 100  # provider-facts.md: GLM "limit=1..100"
_MAX_PAGES = 10_000

# Raised while connecting (or waiting for a pooled connection): no byte of the request left.
_NOT_CONNECTED = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})
# Raised before any connection is opened: this client cannot reach that URL at all.
_UNUSABLE = frozenset({"UnsupportedProtocol", "InvalidURL"})
_HTTP_MODULES = frozenset({"httpx", "httpx2", "httpcore"})


@dataclass
class SendProbe:
    """Set to ``sent=True`` by the request hook: the request reached the HTTP layer."""

    sent: bool = False


# A mutable probe object (not a bool) so that a worker thread running in a copy of the
# context (anyio.to_thread) marks the same object the caller reads.
_CURRENT: ContextVar[SendProbe | None] = ContextVar("inboxd_send_probe", default=None)


@contextmanager
def attempt() -> Iterator[SendProbe]:
    """A fresh probe for one request, visible to the hooks of this task (and its threads)."""
    probe = SendProbe()
    token = _CURRENT.set(probe)
    try:
        yield probe
    finally:
        _CURRENT.reset(token)


def mark_sent(_request: object) -> None:
    """Sync ``request`` event hook: the request is being handed to the HTTP layer."""
    probe = _CURRENT.get()
    if probe is not None:
        probe.sent = True


async def mark_sent_async(request: object) -> None:
    """Async ``request`` event hook: the request is being handed to the HTTP layer."""
    mark_sent(request)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_names(exc: BaseException) -> set[str]:
    """Class names of the httpx/httpx2/httpcore exceptions anywhere in the cause chain."""
    names: set[str] = set()
    for link in _chain(exc):
        for cls in type(link).__mro__:
            if cls.__module__.split(".", 1)[0] in _HTTP_MODULES:
                names.add(cls.__name__)
    return names


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (the API key) or anything else shaped like a key."""
    return redact(text.replace(secret, "[redacted]") if secret else text)


def _describe(exc: BaseException, secret: str = "") -> str:
    """``Type: message``, naming the root cause too when an SDK wrapped it."""
    text = scrub(str(exc), secret)
    own = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    root = list(_chain(exc))[-1]
    if root is exc:
        return own
    root_text = scrub(str(root), secret)
    return f"{own} <- {type(root).__name__}" + (f": {root_text}" if root_text else "")


def unavailable(provider: str, transport: str, why: str) -> TransportUnavailable:
    """The error that moves the chain down: this transport never sent the request."""
    return TransportUnavailable(
        f"{transport} transport cannot be used, nothing was sent ({why})", provider=provider
    )


def translate(
    provider: str, transport: str, exc: BaseException, *, sent: bool, secret: str = ""
) -> ProviderError:
    """A foreign exception that is not a server answer, as one ProviderError.

    Never sent → TransportUnavailable; not connected → Retryable; anything later → ambiguous.
    ``secret`` (the API key) is scrubbed from the exception texts quoted in the message.
    """
    if not sent:
        return unavailable(provider, transport, f"raised before sending: {_describe(exc, secret)}")
    names = _http_names(exc)
    if names & _UNUSABLE:
        return unavailable(provider, transport, f"check base_url: {_describe(exc, secret)}")
    if names & _NOT_CONNECTED:
        return Retryable(
            f"could not connect ({_describe(exc, secret)}); nothing was sent", provider=provider
        )
    return Retryable(
        f"failed after the request was sent ({_describe(exc, secret)}); the provider may have "
        "stored the file: reconcile against its listing before sending it again",
        ambiguous=True,
        provider=provider,
    )


def from_status(
    provider: str, status: int, body: object, headers: Mapping[str, str], clock: Clock
) -> ProviderError:
    """A server's error answer, classified by its body (providers.classify)."""
    return classify(provider, status, body, headers, now=clock())


def _field(obj: object, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def remote_file(provider: str, obj: object) -> RemoteFile:
    """A provider's file object (JSON mapping or SDK model) as a RemoteFile.

    Raises ValueError when ``id`` or ``bytes`` is missing: the caller decides what that means.
    """
    file_id = _field(obj, "id")
    size = _field(obj, "bytes")
    if not isinstance(file_id, str) or not file_id or not isinstance(size, int):
        raise ValueError(f"file object without id/bytes: {redact(repr(obj))}")
    created = _field(obj, "created_at")
    status = _field(obj, "status")
    return RemoteFile(
        provider=provider,
        id=file_id,
        filename=str(_field(obj, "filename") or ""),
        bytes=size,
        created_at=float(created) if isinstance(created, (int, float)) else 0.0,
        purpose=str(_field(obj, "purpose") or ""),
        status=None if status is None else str(status),
    )


def answer_file(provider: str, obj: object) -> RemoteFile:
    """``remote_file`` for a listing or retrieve answer: a malformed object is Retryable."""
    try:
        return remote_file(provider, obj)
    except ValueError as exc:
        raise Retryable(str(exc), provider=provider, status=200) from exc


def page_params(purpose: str | None, after: str | None, *, glm: bool) -> dict[str, str | int]:
    """Query parameters of one listing page.

    GLM is paginated and filters by purpose (``limit``, ``purpose``); Kimi documents one
    unpaginated page and no filter, so only the cursor (never set for Kimi) is passed.
    """
    params: dict[str, str | int] = {}
    if glm:
        params["limit"] = GLM_PAGE_LIMIT
        if purpose is not None:
            params["purpose"] = purpose
    if after is not None:
        params["after"] = after
    return params


PageFetch = Callable[[str | None], Awaitable[tuple[list[RemoteFile], bool]]]
PurposePageFetch = Callable[[str | None, str | None], Awaitable[tuple[list[RemoteFile], bool]]]
"""``fetch(purpose, after)``: one page of one purpose's listing."""


def listing_purposes(
    purpose: str | None, configured: Sequence[str], *, glm: bool
) -> tuple[str | None, ...]:
    """The ``purpose`` of each listing a whole-account listing needs.

    GLM requires ``purpose`` on every list call (provider-facts.md § Real answers), so a
    listing of every file asks once per purpose in use (``configured``; when none is given,
    every purpose GLM documents). Kimi lists everything at once (no filter documented).
    """
    if not glm or purpose is not None:
        return (purpose,)
    return tuple(configured) or tuple(GLM_LIMITS.purposes)


async def _pages(fetch: PageFetch) -> AsyncIterator[list[RemoteFile]]:
    """Each page of a listing in turn: ``fetch(after)`` returns (files, has_more).

    Follows ``has_more`` with ``after`` = the last id (GLM; harmless for Kimi, which sends
    one page). Stops if a page repeats a cursor, so a server ignoring ``after`` cannot loop.
    """
    after: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        files, has_more = await fetch(after)
        yield files
        if not has_more or not files or files[-1].id in seen:
            return
        after = files[-1].id
        seen.add(after)


async def collect_pages(fetch: PageFetch, purpose: str | None) -> list[RemoteFile]:
    """Every page of a listing (see ``_pages``), each file once.

    Files are filtered by ``purpose`` here too, since Kimi documents no filter.
    """
    unique: dict[str, RemoteFile] = {}
    async for files in _pages(fetch):
        unique.update((f.id, f) for f in files)
    return [f for f in unique.values() if purpose is None or f.purpose == purpose]


async def collect_listing(
    fetch: PurposePageFetch, purposes: Sequence[str | None], purpose: str | None
) -> list[RemoteFile]:
    """Every file of every purpose in ``purposes`` (see ``listing_purposes``), each once."""
    unique: dict[str, RemoteFile] = {}
    for each in purposes:
        files = await collect_pages(functools.partial(fetch, each), purpose)
        unique.update((f.id, f) for f in files)
    return list(unique.values())


async def sum_listing(fetch: PurposePageFetch, purposes: Sequence[str | None]) -> tuple[int, int]:
    """(file count, total bytes) over the listings of ``purposes``, keeping no page."""
    count = total = 0
    for each in purposes:
        files, size = await sum_pages(functools.partial(fetch, each))
        count += files
        total += size
    return count, total


async def sum_pages(fetch: PageFetch) -> tuple[int, int]:
    """(file count, total bytes) of a whole listing, each file once, keeping no page.

    Only the ids are kept (to count a file that two pages repeat once), so memory grows by
    an id per file, not by the listing.
    """
    ids: set[str] = set()
    total = 0
    async for files in _pages(fetch):
        for f in files:
            if f.id not in ids:
                ids.add(f.id)
                total += f.bytes
    return len(ids), total


async def find_listed(
    provider: str, file_id: str, listing: Callable[[], Awaitable[list[RemoteFile]]]
) -> RemoteFile:
    """``retrieve`` for an API without GET /files/{id} (GLM documents none): scan the listing."""
    for f in await listing():
        if f.id == file_id:
            return f
    raise Permanent(f"file {file_id} is not in the listing", reason="not_found", provider=provider)


def now_clock() -> float:
    """The default clock: wall time, which Retry-After HTTP dates are compared with."""
    return time.time()


def parser_task(provider: str, obj: object) -> str:
    """The task id of a ``POST /files/parser/create`` answer (JSON mapping or SDK model).

    ``success: false`` is the parser refusing the file: ``Permanent(reason="extract_failed")``;
    an answer without a task id is unreadable: ``Retryable``.
    """
    if _field(obj, "success") is False:
        said = redact(str(_field(obj, "message") or "no message"))
        raise Permanent(
            f"{provider}'s file parser refused the file ({said})",
            reason="extract_failed",
            provider=provider,
            status=200,
        )
    task_id = _field(obj, "task_id")
    if not isinstance(task_id, str) or not task_id:
        raise Retryable(
            f"parser answer without a task_id: {redact(repr(obj))}", provider=provider, status=200
        )
    return task_id


def parser_answer(provider: str, data: bytes) -> ParserAnswer:
    """A ``GET /files/parser/result/{task_id}/text`` body, normalised (unreadable: Retryable)."""
    try:
        obj = json.loads(data)
    except ValueError:
        obj = None
    status = obj.get("status") if isinstance(obj, Mapping) else None
    if not isinstance(status, str):
        raise Retryable(
            f"parser result without a status: {redact(data[:200].decode('utf-8', 'replace'))}",
            provider=provider,
            status=200,
        )
    assert isinstance(obj, Mapping)
    content = obj.get("content")
    message = obj.get("message")
    return ParserAnswer(
        status=status,
        text=content if isinstance(content, str) else "",
        message=message if isinstance(message, str) else "",
    )
