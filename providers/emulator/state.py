"""What the emulator stores and how it judges requests, as each provider would.

Pure decisions (plain values in, an :class:`ApiError` or a JSON-ready value out) plus the
in-memory :class:`Accounts`. Every limit comes from ``providers.limits`` (one table); messages
and error shapes follow ``shared/provider-facts.md``. Where the facts mark a reaction as
unverified, the choice made here is noted beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from providers.emulator.faults import Fault
from providers.limits import MIB, PROVIDERS, ProviderLimits, extension_of
from providers.waits import CHINA_TZ, next_china_midnight

__all__ = [
    "Accounts",
    "ApiError",
    "Occupancy",
    "StoredFile",
    "as_json",
    "auth_error",
    "bad_request",
    "fault_error",
    "file_object",
    "glm_page",
    "judge_upload",
    "kimi_page",
    "not_found",
]


@dataclass(frozen=True)
class StoredFile:
    """One stored file: the ground truth tests compare against (content stays on disk)."""

    provider: str
    id: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: int


@dataclass(frozen=True)
class Occupancy:
    """What one key has stored: file count, total bytes, file count per purpose."""

    files: int = 0
    bytes: int = 0
    by_purpose: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiError:
    """An error answer: HTTP status, Moonshot ``type`` or GLM ``code`` (a string), message."""

    status: int
    code: str
    message: str

    def body(self, provider: str) -> dict[str, Any]:
        """The provider's error body: ``{"error":{"type"|"code", "message"}}``."""
        field = "type" if provider == "kimi" else "code"
        return {"error": {field: self.code, "message": self.message}}


def _bad_request(provider: str, message: str) -> ApiError:
    # GLM answers every parameter problem with code 1214 (provider-facts example).
    return ApiError(400, "invalid_request_error" if provider == "kimi" else "1214", message)


def bad_request(provider: str, message: str) -> ApiError:
    """A 400 in the provider's shape (malformed multipart, bad query, missing field)."""
    return _bad_request(provider, message)


def not_found(provider: str, file_id: str) -> ApiError:
    """404 for an unknown file id (shape unverified for both providers)."""
    code = "resource_not_found_error" if provider == "kimi" else "1214"
    return ApiError(404, code, f"File not found: {file_id}")


def auth_error(provider: str, authorization: str | None, key: str) -> ApiError | None:
    """401 unless the request carries ``Authorization: Bearer <key>``."""
    if authorization == f"Bearer {key}":
        return None
    if provider == "kimi":
        return ApiError(401, "invalid_authentication_error", "Invalid Authentication")
    if not authorization:
        return ApiError(401, "1001", "Authentication parameter not received in Header")
    return ApiError(401, "1002", "Invalid Authorization token")


_KIMI_ACCOUNT = "Your account org-emulator<ak-emulator>"
# provider-facts.md § Real answers: the texts as the services send them.
_GLM_TEXT = {
    "429conc": ("1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),
    "429msg": ("1303", "您当前使用该API的频率过高，请降低频率，或联系客服增加限额。"),
    "balance": ("1113", "您的账户已欠费，请充值后重试。"),
    "daily": ("1304", "该 API 已达今日调用次数限额"),
}
_KIMI_SUSPENDED = ApiError(
    429,
    "exceeded_current_quota_error",
    "Your account is suspended, please check your plan and billing details",
)


def fault_error(  # noqa: PLR0911
    provider: str,
    fault: Fault,
    *,
    now: float,
    rpm: int | None = None,
    concurrency: int | None = None,
) -> ApiError:
    """The answer an injected status fault produces (``reset``/``drop`` are not answers).

    ``rpm`` and ``concurrency`` are the key's limits when the plan sets them: Kimi's
    ``429msg``/``429conc`` answers name them as the real service names the account's own
    (Tier0's ``max RPM: 3`` / ``max concurrency: 1`` when the plan sets none).

    ``now`` (Unix time) dates the reset time a ``cap`` answer names.
    """
    kimi = provider == "kimi"
    kind = fault.kind
    if kind == "401":
        return auth_error(provider, "Bearer revoked", "\0") or ApiError(401, "", "")
    if kind == "429":
        if kimi:
            return ApiError(
                429,
                "rate_limit_reached_error",
                f"Your account request reached max request, please try again after "
                f"{fault.retry_after} seconds",
            )
        return ApiError(429, "1302", "High concurrency usage of this API, please slow down")
    if kind in ("429msg", "429conc") and kimi:
        ceiling = (
            f"max RPM: {rpm or 3}" if kind == "429msg" else f"max concurrency: {concurrency or 1}"
        )
        return ApiError(
            429,
            "rate_limit_reached_error",
            f"{_KIMI_ACCOUNT} request reached organization {ceiling}, please try again after "
            f"{fault.retry_after} seconds",
        )
    if kind == "balance" and kimi:
        # Kimi's error-code page: 403 "insufficient balance" (the type is unverified).
        return ApiError(
            403,
            "permission_denied_error",
            f"{_KIMI_ACCOUNT} has insufficient balance, please recharge your account",
        )
    if kind in _GLM_TEXT and not kimi:
        return ApiError(429, *_GLM_TEXT[kind])
    if kind == "cap" and not kimi:
        reset = datetime.fromtimestamp(next_china_midnight(now), CHINA_TZ)
        return ApiError(
            429, "1308", f"已达到 5 小时的使用上限。您的限额将在 {reset:%Y-%m-%d %H:%M:%S} 重置。"
        )
    if kind in ("quota", "daily", "cap"):
        return (
            _KIMI_SUSPENDED
            if kimi
            else ApiError(429, "1113", "Your account is in arrears, please recharge and retry")
        )
    if kind == "extract":
        # Seen in a real capture: the type is empty.
        return (
            ApiError(500, "", "extract task failed: failed")
            if kimi
            else ApiError(500, "500", "Internal server error (HTTP 500 injected by the emulator)")
        )
    return ApiError(
        int(kind),
        "server_error" if kimi else "500",
        f"Internal server error (HTTP {kind} injected by the emulator)",
    )


def judge_upload(  # noqa: PLR0911 - one return per documented refusal reads best
    limits: ProviderLimits, purpose: str, filename: str, size: int, usage: Occupancy
) -> ApiError | None:
    """Why the provider refuses this upload, or None to store it."""
    provider = limits.provider
    kimi = provider == "kimi"
    rules = limits.purposes.get(purpose)
    if rules is None:
        valid = ", ".join(f"'{p}'" for p in limits.purposes)
        if kimi:
            return _bad_request(provider, f"Invalid purpose: only {valid} accepted")
        return _bad_request(provider, f"Invalid purpose {purpose!r}: use one of {valid}")
    if size == 0:
        return _bad_request(provider, "File size is zero, please confirm and re-upload the file")
    # GLM's API-wide cap (HTTP 435) is the largest per-purpose limit: 100 MB today.
    cap = max(p.max_bytes for p in limits.purposes.values())
    if not kimi and size > cap:
        return ApiError(435, "1214", f"File size exceeds {cap // MIB}MB")
    refusal = rules.refusal(size, extension_of(filename))
    if refusal is not None and refusal[0] == "too_large":
        if kimi:
            return _bad_request(
                provider,
                f"File size is too large, max file size is {rules.max_bytes // MIB}MB, "
                "please confirm and re-upload the file",
            )
        return _bad_request(provider, f"File size too large for purpose '{purpose}': {refusal[1]}")
    if refusal is not None:
        return _bad_request(
            provider, f"File type not supported for purpose '{purpose}': {refusal[1]}"
        )
    return _quota_error(limits, purpose, size, usage)


def _quota_error(
    limits: ProviderLimits, purpose: str, size: int, usage: Occupancy
) -> ApiError | None:
    provider = limits.provider
    if limits.max_files is not None and usage.files >= limits.max_files:
        return _bad_request(
            provider,
            f"The number of files you have uploaded exceeded the max file count "
            f"{limits.max_files}, please delete previous uploaded files",
        )
    if limits.max_total_bytes is not None and usage.bytes + size > limits.max_total_bytes:
        return _bad_request(
            provider,
            f"The total size of files you have uploaded exceeded the max size "
            f"{limits.max_total_bytes // MIB}MB, please delete previous uploaded files",
        )
    max_count = limits.purposes[purpose].max_count
    if max_count is not None and usage.by_purpose.get(purpose, 0) >= max_count:
        return _bad_request(
            provider,
            f"The number of files for purpose '{purpose}' exceeded the max count "
            f"{max_count}, please delete previous uploaded files",
        )
    return None


def file_object(f: StoredFile) -> dict[str, Any]:
    """The FileObject each provider returns (Moonshot adds ``status``/``status_details``)."""
    obj: dict[str, Any] = {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
    }
    if f.provider == "kimi":
        obj["status"] = "ok"
        obj["status_details"] = ""
    return obj


def kimi_page(files: list[StoredFile], query: Mapping[str, str]) -> dict[str, Any]:
    """Moonshot's list: every file, oldest first, in one page without ``has_more``.

    ``after`` (the openai SDK's cursor pager sends the last id it saw) gives the files after
    that id, so the pager's next request gets an empty page and stops; an unknown id gives
    an empty page too (Moonshot documents no pagination: its reaction is unverified).
    """
    after = query.get("after")
    if after:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": [file_object(f) for f in files]}


def glm_page(
    files: list[StoredFile], query: Mapping[str, str], limits: ProviderLimits
) -> dict[str, Any] | ApiError:
    """GLM's list: ``purpose`` (required, provider-facts.md § Real answers), ``order``
    ``created_at`` (documented; newest first) or asc|desc (default desc, newest first),
    ``after`` = the id of the last file of the previous page, ``limit`` 1..100 (default 20).

    The page shape ``{"object":"list","data":[...],"has_more":bool}`` follows the OpenAI
    convention the GLM API mirrors (the exact live shape is unverified). A list without
    ``purpose`` is refused with 1214 in Chinese (the live wording is unverified).
    """
    purpose = query.get("purpose")
    if not purpose:
        return _bad_request("glm", "参数 purpose 不能为空")
    if purpose not in limits.purposes:
        return _bad_request("glm", f"Invalid purpose {purpose!r}")
    order = query.get("order", "desc")
    raw_limit = query.get("limit", "20")
    if order not in ("asc", "desc", "created_at") or not (
        raw_limit.isdigit() and 1 <= int(raw_limit) <= 100
    ):
        return _bad_request("glm", "limit must be 1..100 and order created_at, asc or desc")
    chosen = [f for f in files if f.purpose == purpose]
    if order != "asc":
        chosen.reverse()
    after = query.get("after")
    if after:
        ids = [f.id for f in chosen]
        if after not in ids:
            return _bad_request("glm", f"after: unknown file id {after}")
        chosen = chosen[ids.index(after) + 1 :]
    page = chosen[: int(raw_limit)]
    return {
        "object": "list",
        "data": [file_object(f) for f in page],
        "has_more": len(chosen) > len(page),
    }


class Accounts:
    """Stored files per provider, in upload order.

    Also what tests observe (read-only, never consulted by the API): ``history`` every file
    ever stored, ``deletes`` every file id a DELETE asked for (found or not), ``peak`` the
    most files each account held at any moment.
    """

    def __init__(self) -> None:
        self._files: dict[str, dict[str, StoredFile]] = {p: {} for p in PROVIDERS}
        self._bytes = dict.fromkeys(PROVIDERS, 0)
        self._by_purpose: dict[str, dict[str, int]] = {p: {} for p in PROVIDERS}
        self.history: dict[str, list[StoredFile]] = {p: [] for p in PROVIDERS}
        self.deletes: dict[str, list[str]] = {p: [] for p in PROVIDERS}
        self.peak = dict.fromkeys(PROVIDERS, 0)

    def usage(self, provider: str) -> Occupancy:
        """What this provider's key has stored."""
        return Occupancy(
            len(self._files[provider]), self._bytes[provider], self._by_purpose[provider]
        )

    def add(self, f: StoredFile) -> None:
        """Record a stored file."""
        self._files[f.provider][f.id] = f
        self._bytes[f.provider] += f.bytes
        counts = self._by_purpose[f.provider]
        counts[f.purpose] = counts.get(f.purpose, 0) + 1
        self.history[f.provider].append(f)
        self.peak[f.provider] = max(self.peak[f.provider], len(self._files[f.provider]))

    def get(self, provider: str, file_id: str) -> StoredFile | None:
        """The file, or None."""
        return self._files[provider].get(file_id)

    def remove(self, provider: str, file_id: str) -> StoredFile | None:
        """Forget the file (a DELETE); the removed file or None."""
        self.deletes[provider].append(file_id)
        f = self._files[provider].pop(file_id, None)
        if f is not None:
            self._bytes[provider] -= f.bytes
            self._by_purpose[provider][f.purpose] -= 1
        return f

    def of(self, provider: str) -> list[StoredFile]:
        """One provider's files, oldest first."""
        return list(self._files[provider].values())

    def all(self) -> list[StoredFile]:
        """Every file of every provider."""
        return [f for p in PROVIDERS for f in self._files[p].values()]

    def clear(self) -> None:
        """Forget everything."""
        for provider in PROVIDERS:
            self._files[provider].clear()
            self._bytes[provider] = 0
            self._by_purpose[provider].clear()
            self.history[provider].clear()
            self.deletes[provider].clear()
            self.peak[provider] = 0


def as_json(f: StoredFile) -> dict[str, Any]:
    """A stored file as the admin endpoint lists it."""
    return asdict(f)
