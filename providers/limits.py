"""What each provider accepts: purposes, per-purpose size and type limits, account quotas.

Every value here comes from ``shared/provider-facts.md`` (verified against the providers'
public docs); the comment beside each one says which line. This is the ONE place these values
live: the emulator, the router and config validation all read this table, and the operator
may override any limit from config (``[providers.<name>.limits.<purpose>]``), because
providers change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from providers.errors import Refusal

__all__ = [
    "GLM_LIMITS",
    "GLM_PARSER_TOOL",
    "GLM_PARSER_TYPES",
    "IMAGE_TYPES",
    "KIMI_LIMITS",
    "LIMITS",
    "MIB",
    "PROVIDERS",
    "ProviderLimits",
    "PurposeLimits",
    "PurposeOverride",
    "extension_of",
    "extract_method",
    "extract_supported",
]

MIB = 1024 * 1024
_T = TypeVar("_T")

# Image types, for the "images 5 MB" sub-limits (provider-facts.md, GLM table).
IMAGE_TYPES = frozenset(
    {"png", "jpg", "jpeg", "bmp", "gif", "svg", "svgz", "webp", "ico", "xbm", "dib", "pjp"}
    | {"tif", "tiff", "pjpeg", "avif", "apng", "jfif"}
)


def extension_of(name: str) -> str:
    """The lower-case extension of a file name without the dot ('' when there is none)."""
    base = name.rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return ""
    return base.rsplit(".", 1)[-1].lower()


@dataclass(frozen=True)
class PurposeLimits:
    """Limits of one purpose on one provider.

    ``types`` is the set of accepted extensions (lower case, no dot); ``None`` means the docs
    list none and the server is the judge. ``max_image_bytes`` applies to IMAGE_TYPES.
    """

    max_bytes: int
    types: frozenset[str] | None = None
    max_image_bytes: int | None = None
    max_count: int | None = None

    def refusal(self, size: int, extension: str) -> Refusal | None:
        """Why a file of this size and extension is refused: ``(reason, detail)``, or None."""
        if self.types is not None and extension not in self.types:
            shown = f".{extension}" if extension else "no extension"
            return "type_not_allowed", f"{shown} not in {', '.join(sorted(self.types))}"
        limit = self.max_bytes
        if self.max_image_bytes is not None and extension in IMAGE_TYPES:
            limit = min(limit, self.max_image_bytes)
        if size > limit:
            return "too_large", f"{size} bytes > {limit} bytes"
        return None


@dataclass(frozen=True)
class ProviderLimits:
    """Everything one provider accepts, and its account-wide quotas (None: not documented)."""

    provider: str
    purposes: Mapping[str, PurposeLimits]
    default_purpose: str
    max_files: int | None = None
    max_total_bytes: int | None = None
    notes: Mapping[str, str] = field(default_factory=dict)

    def with_overrides(
        self,
        purposes: Mapping[str, PurposeOverride],
        *,
        max_files: int | None = None,
        max_total_bytes: int | None = None,
    ) -> ProviderLimits:
        """A copy with config overrides applied (only the values the operator set)."""
        merged = dict(self.purposes)
        for purpose, change in purposes.items():
            base = merged.get(purpose, PurposeLimits(max_bytes=100 * MIB))
            merged[purpose] = PurposeLimits(
                max_bytes=_pick(change.max_bytes, base.max_bytes),
                types=base.types if change.types is None else frozenset(change.types),
                max_image_bytes=_pick(change.max_image_bytes, base.max_image_bytes),
                max_count=_pick(change.max_count, base.max_count),
            )
        return replace(
            self,
            purposes=MappingProxyType(merged),
            max_files=_pick(max_files, self.max_files),
            max_total_bytes=_pick(max_total_bytes, self.max_total_bytes),
        )


@dataclass(frozen=True)
class PurposeOverride:
    """An operator's change to one purpose's limits; None keeps the documented value."""

    max_bytes: int | None = None
    types: frozenset[str] | None = None
    max_image_bytes: int | None = None
    max_count: int | None = None


def _pick(override: _T | None, default: _T) -> _T:
    return default if override is None else override


# provider-facts.md § Moonshot / Kimi: "file-extract types (documented)".
_KIMI_EXTRACT = frozenset(
    "pdf txt csv doc docx xls xlsx ppt pptx md jpeg jpg png bmp gif svg svgz webp ico xbm dib "
    "pjp tif tiff pjpeg avif dot apng epub jfif html json mobi log go h c cpp cxx cc cs java js "
    "css jsp php py py3 asp yaml yml ini conf ts tsx".split()
)

KIMI_LIMITS = ProviderLimits(
    provider="kimi",
    purposes=MappingProxyType(
        {
            # "Limits: 100 MB per file" for every purpose.
            "file-extract": PurposeLimits(max_bytes=100 * MIB, types=_KIMI_EXTRACT),
            "image": PurposeLimits(max_bytes=100 * MIB, types=IMAGE_TYPES & _KIMI_EXTRACT),
            # No documented type list for video: the server judges.
            "video": PurposeLimits(max_bytes=100 * MIB),
            # "batch (U: newest reference only)": JSON lines, as every batch API takes.
            "batch": PurposeLimits(max_bytes=100 * MIB, types=frozenset({"jsonl"})),
        }
    ),
    default_purpose="file-extract",
    # "1,000 files per account; 10 GB total".
    max_files=1000,
    max_total_bytes=10 * 1024 * MIB,
)

_GLM_CODE_INTERPRETER = frozenset("pdf docx doc xls xlsx txt png jpg jpeg csv".split())

GLM_LIMITS = ProviderLimits(
    provider="glm",
    purposes=MappingProxyType(
        {
            # | batch | jsonl | 100 MB | 1,000 |
            "batch": PurposeLimits(max_bytes=100 * MIB, types=frozenset({"jsonl"}), max_count=1000),
            # | code-interpreter | pdf docx doc xls xlsx txt png jpg jpeg csv | 20 MB,
            #   images 5 MB | 100 |
            "code-interpreter": PurposeLimits(
                max_bytes=20 * MIB,
                types=_GLM_CODE_INTERPRETER,
                max_image_bytes=5 * MIB,
                max_count=100,
            ),
            # | agent | bigmodel: as code-interpreter; z.ai: pdf doc xlsx ppt txt jpg png |
            #   bigmodel 20 MB (images 5 MB); z.ai 100 MB | 1,000 / 100 |
            # The union of both type lists, and bigmodel's stricter sizes: on api.z.ai raise
            # max_bytes to 100 MB with [providers.glm.limits.agent].
            "agent": PurposeLimits(
                max_bytes=20 * MIB,
                types=_GLM_CODE_INTERPRETER | {"ppt"},
                max_image_bytes=5 * MIB,
                max_count=100,
            ),
            # | file-extract (U today) | pdf docx doc xls xlsx ppt pptx png jpg jpeg csv |
            #   50 MB, images 5 MB | 100 |
            "file-extract": PurposeLimits(
                max_bytes=50 * MIB,
                types=frozenset("pdf docx doc xls xlsx ppt pptx png jpg jpeg csv".split()),
                max_image_bytes=5 * MIB,
                max_count=100,
            ),
            # | voice-clone-input | mp3 wav | not given |: the 100 MB API-wide cap (HTTP 435).
            "voice-clone-input": PurposeLimits(
                max_bytes=100 * MIB, types=frozenset({"mp3", "wav"})
            ),
            # | fine-tune (SDK only) | jsonl | 100 MB |
            "fine-tune": PurposeLimits(max_bytes=100 * MIB, types=frozenset({"jsonl"})),
        }
    ),
    # "agent": documented today by both bigmodel and z.ai (file-extract is "U today").
    default_purpose="agent",
)

LIMITS: Mapping[str, ProviderLimits] = MappingProxyType({"kimi": KIMI_LIMITS, "glm": GLM_LIMITS})
PROVIDERS = tuple(LIMITS)


# provider-facts.md § Real answers, "GLM content / extraction": the file-parser API's "lite"
# tool (docs.bigmodel.cn, 工具 API / 文件解析) reads these types; file_type is sent upper-case.
GLM_PARSER_TYPES = frozenset("pdf docx doc xls xlsx ppt pptx png jpg jpeg csv txt md".split())
GLM_PARSER_TOOL = "lite"


def extract_method(provider: str, purpose: str) -> str | None:
    """How a stored file's text comes home: ``"content"``, ``"parser"`` or None (it cannot).

    From provider-facts.md:

    - Kimi: ``GET /files/{id}/content`` serves extracted text for ``file-extract`` files only
      (``image``, ``video`` and ``batch`` files have none).
    - GLM: ``/files/{id}/content`` serves ``batch`` (the JSON lines themselves) and, per the
      older docs, ``file-extract`` files. ``code-interpreter`` and ``agent`` take only
      documents and images that the file-parser API reads (every type of theirs is in
      :data:`GLM_PARSER_TYPES`), so their text comes from the parser. ``voice-clone-input``
      (mp3, wav) and ``fine-tune`` (jsonl, not served back) have no text.
    """
    if provider == "kimi":
        return "content" if purpose == "file-extract" else None
    if provider == "glm":
        if purpose in ("batch", "file-extract"):
            return "content"
        if purpose in ("code-interpreter", "agent"):
            return "parser"
    return None


def extract_supported(provider: str, purpose: str) -> bool:
    """Whether files of ``purpose`` on ``provider`` have extracted text (see ``extract_method``).

    ``check-config`` refuses ``extract = true`` on an inbox whose purpose has none.
    """
    return extract_method(provider, purpose) is not None
