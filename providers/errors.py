"""The one exception tree of inboxd.

::

    InboxdError
    ├── ConfigError                 bad config: refuse to start, name the key and the fix
    ├── StateError                  the state file failed at run time (gone, replaced, disk)
    ├── StateUnavailable            the shared database cannot be reached now: wait, retry
    ├── ClaimedElsewhere(owner)     another host holds the file's claim: look again later
    ├── ClaimLost(row_id, owner)     our claim on a file passed to another host: leave it
    ├── RejectedFile(reason)        validation said no → quarantine
    ├── ProviderError
    │   ├── TransportUnavailable    this client can't be used (import, bug) → next transport
    │   ├── Retryable               5xx, timeouts, connection, overload (retry_after?)
    │   │   └── Throttled           a rate-limit answer: pause the provider, no attempt spent
    │   ├── Permanent               4xx the file will never pass (bad purpose, too large)
    │   ├── AuthFailed              401/434 → breaker forced open, loud log, metric
    │   └── QuotaExhausted          quota / balance / caps → provider parked (until?)
    ├── Parked(until, reason)       no provider can take the file now: it waits until ``until``
    ├── FileVanished                the inbox file is gone (ENOENT): forget it, not a rejection
    ├── FileBusy                    the file cannot be opened or read for now: retry later
    ├── FileChanged(kind)           the path no longer names the file as checked: nothing moved
    ├── MoveError                   a file could not be moved or a sidecar written
    │   └── DestinationExists       the destination name is taken: nothing moved, pick another
    └── InvalidTransition           a ledger transition the table forbids (a caller's bug)

``handlers.validate.Refused`` is the one subclass kept outside: a ``RejectedFile`` that also
carries the ``handlers.identity.Identity`` of the file it was made on, and this package imports
nothing from ``handlers``. ``daemon.state._connection._CorruptError`` never leaves its module:
``connect`` (the state file's opening) moves the corrupt file aside and rebuilds it, or raises
``ConfigError``.

``Reason`` is the one list of quarantine reason codes (``RejectedFile.reason``, the sidecar's
``reason``, ``inboxd_quarantined_total{reason}``, the README's table): mypy refuses any other.

Foreign errors (httpx, openai, zhipuai, sqlite3, OSError) are translated into these once, at
the edge that meets them, with ``raise ... from exc``. Nothing else catches foreign errors.
Messages never contain an API key: the translating edge builds them from status, error
code/type and the provider's message only, and every configured key is removed by value
(``providers.redaction``) when a ``ProviderError`` or ``RejectedFile`` is made.
"""

from __future__ import annotations

import math
from typing import Literal, TypeGuard, get_args

from providers.redaction import scrub

__all__ = [
    "REASONS",
    "AuthFailed",
    "ClaimLost",
    "ClaimedElsewhere",
    "ConfigError",
    "DestinationExists",
    "FileBusy",
    "FileChanged",
    "FileVanished",
    "InboxdError",
    "InvalidTransition",
    "MoveError",
    "Parked",
    "Permanent",
    "ProviderError",
    "QuotaExhausted",
    "Reason",
    "Refusal",
    "RejectedFile",
    "Retryable",
    "StateError",
    "StateUnavailable",
    "Throttled",
    "TransportUnavailable",
    "is_reason",
]

Reason = Literal[
    "not_regular_file",
    "symlink",
    "empty",
    "too_large",
    "type_not_allowed",
    "unreadable",
    "name_invalid",
    "upload_rejected",
    "upload_failed",
    "quota_exhausted",
    "not_found",
    "unknown_provider",
    "unknown_purpose",
    "no_provider",
    "extract_failed",
]
"""Why a file was quarantined: the stable codes of ``RejectedFile.reason``, of the sidecar's
``reason`` and of ``inboxd_quarantined_total{reason}`` (the README's table lists them)."""
REASONS: tuple[Reason, ...] = get_args(Reason)
Refusal = tuple[Reason, str]
"""A rejection as a verdict returns it: ``(reason, detail)``."""


def is_reason(code: str) -> TypeGuard[Reason]:
    """Whether ``code`` is one of the quarantine reasons."""
    return code in REASONS


class InboxdError(Exception):
    """Root of every error inboxd raises on purpose."""


class ConfigError(InboxdError):
    """The configuration cannot be used; the daemon refuses to start (or to reload).

    ``problems`` holds one line per problem, each naming the key path and the fix.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StateError(InboxdError):
    """The state file failed while the daemon runs (deleted, replaced, unwritable disk).

    A fault of the daemon itself, not of one file: the process exits non-zero so that
    systemd restarts it on a sound state file.
    """


class StateUnavailable(InboxdError):
    """The shared database (``state_url``) cannot be reached now; the message is one line
    naming the server and the fix, never a password. Not fatal: the caller waits and retries."""


class ClaimedElsewhere(InboxdError):
    """Another host holds the claim on this file (a live lease): look at it again at
    ``lease_until`` (wall-clock unix seconds); by then it is archived, or its host died and
    the claim can be taken over."""

    def __init__(self, owner: str, lease_until: float) -> None:
        self.owner = owner
        self.lease_until = lease_until
        super().__init__(f"claimed by host {owner} until {lease_until:.0f}")


class ClaimLost(InboxdError):
    """A ledger row this host worked on is now another host's (its lease had expired and
    the other host took the file over): nothing was changed; leave the file to its owner."""

    def __init__(self, row_id: int, owner: str | None) -> None:
        self.row_id = row_id
        self.owner = owner
        super().__init__(f"ledger row {row_id} is now claimed by host {owner}")


class RejectedFile(InboxdError):
    """A file failed validation (or the provider refused it for good): it goes to quarantine.

    ``reason`` is a stable code (``empty``, ``too_large``, …); ``detail`` is for humans.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason: Reason = reason
        self.detail = detail = scrub(detail)
        super().__init__(f"{reason}: {detail}")


class ProviderError(InboxdError):
    """A provider call failed. Subclasses say what the caller should do about it.

    ``status`` is the HTTP status when the server answered (None when it did not),
    ``code`` the provider's error code (GLM ``error.code``) or type (Moonshot ``error.type``),
    ``should_retry`` the server's ``x-should-retry`` verdict when it sent one.
    """

    should_retry: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        # Every path to a sidecar, the ledger or a log starts here: no configured key passes.
        self.message = message = scrub(message)
        self.provider = provider
        self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.provider or "provider"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        return f"{' '.join(parts)}: {self.message}"


class TransportUnavailable(ProviderError):
    """This client cannot be used (SDK missing, raised before sending): try the next transport.

    Raised only when the request certainly never reached the server.
    """


class Retryable(ProviderError):
    """A transient failure: 5xx, timeout, connection error, transient 429.

    ``ambiguous`` is True when the request may have reached the server (a timeout or reset
    after the body was sent): the caller must reconcile against the provider's listing before
    sending the file again. ``retry_after`` is the server's wish in seconds, if it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        ambiguous: bool = False,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
        self.ambiguous = ambiguous


class Throttled(Retryable):
    """A rate-limit answer (Kimi ``rate_limit_reached_error``, GLM 1302/1303/1305).

    The whole provider pauses for ``retry_after`` seconds (from ``Retry-After``, reset
    headers or the message text; None when none was named) and the file waits without
    spending an attempt. ``scope`` is ``"rate"`` or ``"concurrency"``; ``limit`` is the
    ceiling the message names (Kimi: ``max RPM: 120`` → 120, ``max concurrency: 4`` → 4),
    or None.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        scope: str = "rate",
        limit: int | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
        self.scope = scope
        self.limit = limit


class Permanent(ProviderError):
    """The provider will never accept this file as sent (bad purpose, too large, empty).

    ``reason`` is the quarantine reason code for it.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: Reason = "upload_rejected",
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.reason: Reason = reason


class AuthFailed(ProviderError):
    """401 (GLM also 434): the key is wrong or lacks access. The breaker is forced open."""


class QuotaExhausted(ProviderError):
    """Quota, balance or a usage cap reached: retrying will not help until it resets or an
    operator acts.

    ``until`` is the wall-clock time the cap resets when the provider said (GLM 1304 daily
    limit, 1308/1310 "将在 … 重置"), else None (park for ``quota_park``). ``balance`` is True
    for an exhausted balance (Kimi 403 / ``exceeded_current_quota_error``, GLM 1113): the
    operator must top up the account, not check the key.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        until: float | None = None,
        balance: bool = False,
    ) -> None:
        super().__init__(
            message, provider=provider, status=status, code=code, retry_after=retry_after
        )
        self.until = until
        self.balance = balance


class Parked(InboxdError):
    """The file cannot go now but may later: try it again at ``until`` (it stays pending).

    ``until`` is wall-clock unix seconds (``math.inf``: only a breaker reset helps, e.g. after
    AuthFailed); ``reason`` is a stable code: the breaker's reason (``quota``,
    ``auth_failed``, …), ``throttled``, ``unsure`` (an ambiguous attempt not yet settled by a
    listing) or why the last pass gave up (``attempts_exhausted``, ``deadline``, …);
    ``detail`` is the last error, for humans.
    """

    def __init__(self, until: float, reason: str, detail: str = "") -> None:
        self.until = until
        self.reason = reason
        self.detail = detail
        when = "a breaker reset" if math.isinf(until) else f"{until:.0f}"
        super().__init__(f"parked until {when}: {reason}")


class FileVanished(InboxdError):
    """The file is no longer there (ENOENT): not a rejection; forget it."""


class FileBusy(InboxdError):
    """The file could not be opened or read for a reason that may pass: retry later."""


class FileChanged(InboxdError):
    """The path no longer names the file as it was checked; nothing was moved.

    ``kind``: ``replaced`` (another inode or a symlink is at the name now; the checked file's
    bytes were complete) or ``changed`` (the same inode was written to since).
    """

    def __init__(self, kind: Literal["replaced", "changed"], message: str) -> None:
        self.kind = kind
        super().__init__(message)


class MoveError(InboxdError):
    """A file could not be moved or a sidecar written (the message names both paths and why)."""


class DestinationExists(MoveError):
    """The destination name is taken; nothing was moved (pick another name)."""


class InvalidTransition(InboxdError):
    """A ledger transition the table does not allow (a bug in the caller, never a file's fault)."""

    def __init__(self, from_state: str, to_state: str, detail: str = "") -> None:
        self.from_state = from_state
        self.to_state = to_state
        message = f"ledger: {from_state} → {to_state} is not an allowed transition"
        super().__init__(f"{message} ({detail})" if detail else message)
