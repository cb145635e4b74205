"""Table tests of the emulator's pure parts: the fault spec, the decisions, the judging."""

from __future__ import annotations

import pytest

from providers.emulator.cli import build_parser
from providers.emulator.disposition import disposition_params
from providers.emulator.extraction import extracted
from providers.emulator.faults import (
    FAULT_KINDS,
    Chance,
    Decision,
    Fault,
    FaultPlan,
    decide,
    parse_faults,
)
from providers.emulator.state import (
    Accounts,
    ApiError,
    Occupancy,
    StoredFile,
    auth_error,
    fault_error,
    glm_page,
    judge_upload,
    kimi_page,
)
from providers.errors import ConfigError
from providers.limits import GLM_LIMITS, KIMI_LIMITS, MIB


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("kimi:none", {"kimi": FaultPlan()}),
        ("kimi:500@0.3", {"kimi": FaultPlan((Chance(Fault("500"), 0.3),))}),
        (
            "kimi:500@0.3,429:2@0.1",
            {"kimi": FaultPlan((Chance(Fault("500"), 0.3), Chance(Fault("429", 2), 0.1)))},
        ),
        ("glm:429", {"glm": FaultPlan((Chance(Fault("429", 1), 1.0),))}),
        (
            "kimi:429msg:3@0.5,429conc@0.1,balance@0.1",
            {
                "kimi": FaultPlan(
                    (
                        Chance(Fault("429msg", 3), 0.5),
                        Chance(Fault("429conc", 1), 0.1),
                        Chance(Fault("balance"), 0.1),
                    )
                )
            },
        ),
        (
            "glm:seq=daily/cap/extract",
            {"glm": FaultPlan(sequence=(Fault("daily"), Fault("cap"), Fault("extract")))},
        ),
        (
            "glm:seq=500/ok/drop",
            {"glm": FaultPlan(sequence=(Fault("500"), None, Fault("drop")))},
        ),
        ("kimi:latency=20+10", {"kimi": FaultPlan(latency=0.02, jitter=0.01)}),
        ("kimi:slow=5", {"kimi": FaultPlan(slow=0.005)}),
        (
            "all:quota@0.5",
            {
                "kimi": FaultPlan((Chance(Fault("quota"), 0.5),)),
                "glm": FaultPlan((Chance(Fault("quota"), 0.5),)),
            },
        ),
        (
            "kimi:reset ; glm:401@0.25,503@0.25",
            {
                "kimi": FaultPlan((Chance(Fault("reset"), 1.0),)),
                "glm": FaultPlan((Chance(Fault("401"), 0.25), Chance(Fault("503"), 0.25))),
            },
        ),
    ],
)
def test_parse_faults_table(spec: str, expected: dict[str, FaultPlan]) -> None:
    """Each documented spec form parses to exactly this plan per provider."""
    assert parse_faults(spec) == expected


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("openai:500", "must start with one of"),
        ("kimi", "must start with one of"),
        ("kimi:418", "unknown fault '418'"),
        ("kimi:500@1.5", "probability '1.5'"),
        ("kimi:500@0.6,502@0.6", "add up to more than 1"),
        ("kimi:429:soon", "whole seconds"),
        ("kimi:reset:3", "takes no ':' argument"),
        ("kimi:latency=-3", "milliseconds"),
    ],
)
def test_parse_faults_rejects(spec: str, needle: str) -> None:
    """A bad spec raises ConfigError naming the spec and what is wrong."""
    with pytest.raises(ConfigError) as info:
        parse_faults(spec)
    assert needle in str(info.value)
    assert str(info.value).startswith("bad emulator fault spec")


def test_plan_str_round_trips() -> None:
    """A plan printed by the admin endpoint parses back to the same plan."""
    plan = parse_faults("kimi:500@0.3,429:2@0.1,seq=ok/reset,latency=20+10,slow=5")["kimi"]
    assert parse_faults(f"kimi:{plan}")["kimi"] == plan


@pytest.mark.parametrize(
    ("index", "draw", "fault"),
    [
        (0, 0.99, Fault("503")),  # scripted steps win over chances
        (1, 0.0, None),  # "ok" step
        (2, 0.05, Fault("500")),
        (2, 0.25, Fault("429", 2)),
        (2, 0.35, None),
    ],
)
def test_decide_table(index: int, draw: float, fault: Fault | None) -> None:
    """Sequence first, then one draw against the cumulative probabilities."""
    plan = FaultPlan(
        (Chance(Fault("500"), 0.2), Chance(Fault("429", 2), 0.1)),
        sequence=(Fault("503"), None),
        latency=0.01,
        jitter=0.02,
    )
    assert decide(plan, index, draw, 0.5) == Decision(fault, 0.02, 0.0)


def _usage(files: int = 0, total: int = 0, **by: int) -> Occupancy:
    return Occupancy(files, total, {k.replace("_", "-"): v for k, v in by.items()})


@pytest.mark.parametrize(
    ("purpose", "name", "size", "usage", "expected"),
    [
        ("file-extract", "a.pdf", 10, _usage(), None),
        (
            "assistants",
            "a.pdf",
            10,
            _usage(),
            ApiError(
                400,
                "invalid_request_error",
                "Invalid purpose: only 'file-extract', 'image', 'video', 'batch' accepted",
            ),
        ),
        (
            "file-extract",
            "a.pdf",
            0,
            _usage(),
            ApiError(
                400,
                "invalid_request_error",
                "File size is zero, please confirm and re-upload the file",
            ),
        ),
        (
            "file-extract",
            "a.pdf",
            100 * MIB + 1,
            _usage(),
            ApiError(
                400,
                "invalid_request_error",
                "File size is too large, max file size is 100MB, please confirm and re-upload "
                "the file",
            ),
        ),
        (
            "file-extract",
            "a.exe",
            10,
            _usage(),
            ApiError(400, "invalid_request_error", "File type not supported for purpose"),
        ),
        (
            "file-extract",
            "a.pdf",
            10,
            _usage(files=1000),
            ApiError(
                400,
                "invalid_request_error",
                "The number of files you have uploaded exceeded the max file count 1000, "
                "please delete previous uploaded files",
            ),
        ),
        (
            "file-extract",
            "a.pdf",
            2,
            _usage(files=3, total=10 * 1024 * MIB - 1),
            ApiError(400, "invalid_request_error", "exceeded the max size 10240MB"),
        ),
    ],
)
def test_judge_kimi(
    purpose: str, name: str, size: int, usage: Occupancy, expected: ApiError | None
) -> None:
    """Moonshot's refusals, in its documented words (prefix match for undocumented ones)."""
    got = judge_upload(KIMI_LIMITS, purpose, name, size, usage)
    if expected is None or got is None:
        assert got == expected
    else:
        assert (got.status, got.code) == (expected.status, expected.code)
        assert expected.message in got.message


@pytest.mark.parametrize(
    ("purpose", "name", "size", "usage", "status", "needle"),
    [
        ("agent", "a.pdf", 10, _usage(), None, ""),
        ("file", "a.pdf", 10, _usage(), 400, "Invalid purpose 'file'"),
        ("batch", "a.jsonl", 100 * MIB + 1, _usage(), 435, "File size exceeds 100MB"),
        ("agent", "a.pdf", 20 * MIB + 1, _usage(), 400, "too large for purpose 'agent'"),
        ("agent", "a.png", 5 * MIB + 1, _usage(), 400, "too large for purpose 'agent'"),
        ("batch", "a.pdf", 10, _usage(), 400, "not supported for purpose 'batch'"),
        ("agent", "a.pdf", 10, _usage(files=100, agent=100), 400, "max count 100"),
        ("batch", "a.jsonl", 10, _usage(files=100, agent=100), None, ""),
    ],
)
def test_judge_glm(
    *, purpose: str, name: str, size: int, usage: Occupancy, status: int | None, needle: str
) -> None:
    """GLM's refusals: code "1214" (a string), 435 over 100 MB, per-purpose sizes and counts."""
    got = judge_upload(GLM_LIMITS, purpose, name, size, usage)
    if status is None:
        assert got is None
    else:
        assert got is not None
        assert (got.status, got.code) == (status, "1214")
        assert needle in got.message


@pytest.mark.parametrize(
    ("provider", "header", "expected"),
    [
        ("kimi", "Bearer k", None),
        ("kimi", None, ApiError(401, "invalid_authentication_error", "Invalid Authentication")),
        (
            "kimi",
            "Bearer x",
            ApiError(401, "invalid_authentication_error", "Invalid Authentication"),
        ),
        ("glm", None, ApiError(401, "1001", "Authentication parameter not received in Header")),
        ("glm", "Bearer x", ApiError(401, "1002", "Invalid Authorization token")),
    ],
)
def test_auth_error_table(provider: str, header: str | None, expected: ApiError | None) -> None:
    """Only the exact Bearer key passes; each provider refuses in its own shape."""
    assert auth_error(provider, header, "k") == expected


@pytest.mark.parametrize(
    ("provider", "fault", "status", "code"),
    [
        ("kimi", Fault("429", 3), 429, "rate_limit_reached_error"),
        ("glm", Fault("429", 3), 429, "1302"),
        ("kimi", Fault("quota"), 429, "exceeded_current_quota_error"),
        ("glm", Fault("quota"), 429, "1113"),
        ("kimi", Fault("502"), 502, "server_error"),
        ("glm", Fault("503"), 503, "500"),
        ("glm", Fault("401"), 401, "1002"),
        ("kimi", Fault("429msg", 2), 429, "rate_limit_reached_error"),
        ("glm", Fault("429msg", 2), 429, "1303"),
        ("kimi", Fault("429conc", 1), 429, "rate_limit_reached_error"),
        ("glm", Fault("429conc", 1), 429, "1302"),
        ("kimi", Fault("balance"), 403, "permission_denied_error"),
        ("glm", Fault("balance"), 429, "1113"),
        ("glm", Fault("daily"), 429, "1304"),
        ("kimi", Fault("daily"), 429, "exceeded_current_quota_error"),
        ("glm", Fault("cap"), 429, "1308"),
        ("kimi", Fault("cap"), 429, "exceeded_current_quota_error"),
        ("kimi", Fault("extract"), 500, ""),
        ("glm", Fault("extract"), 500, "500"),
    ],
)
def test_fault_error_table(provider: str, fault: Fault, status: int, code: str) -> None:
    """Each status fault answers with the provider's status and error type/code."""
    got = fault_error(provider, fault, now=0.0)
    assert (got.status, got.code) == (status, code)
    field = "type" if provider == "kimi" else "code"
    assert got.body(provider)["error"][field] == code


def _files(n: int) -> list[StoredFile]:
    return [StoredFile("glm", f"id{i}", f"f{i}.pdf", "agent", 1, "x", i) for i in range(n)]


def test_glm_page_follows_after_and_order() -> None:
    """Pages of `limit` files, newest first by default, `after` = last id of the page before."""
    files = _files(5)
    first = glm_page(files, {"purpose": "agent", "limit": "2"}, GLM_LIMITS)
    assert isinstance(first, dict)
    assert [f["id"] for f in first["data"]] == ["id4", "id3"]
    assert first["has_more"] is True
    second = glm_page(files, {"purpose": "agent", "limit": "2", "after": "id3"}, GLM_LIMITS)
    assert isinstance(second, dict)
    assert [f["id"] for f in second["data"]] == ["id2", "id1"]
    assert second["has_more"] is True
    last = glm_page(files, {"purpose": "agent", "limit": "2", "after": "id0"}, GLM_LIMITS)
    assert last == {"object": "list", "data": [], "has_more": False}
    asc = glm_page(files, {"purpose": "agent", "order": "asc", "after": "id2"}, GLM_LIMITS)
    assert isinstance(asc, dict)
    assert [f["id"] for f in asc["data"]] == ["id3", "id4"]
    assert asc["has_more"] is False
    documented = glm_page(files, {"purpose": "agent", "order": "created_at"}, GLM_LIMITS)
    assert isinstance(documented, dict)
    assert [f["id"] for f in documented["data"]] == ["id4", "id3", "id2", "id1", "id0"]


def test_glm_page_requires_purpose() -> None:
    """A GLM list without purpose is refused: 400, code 1214, in Chinese."""
    assert glm_page(_files(1), {}, GLM_LIMITS) == ApiError(400, "1214", "参数 purpose 不能为空")


def test_kimi_page_honours_after() -> None:
    """Kimi's one page starts after the ``after`` id; after the last (or unknown) id it is empty."""
    files = [StoredFile("kimi", f"c{i}", "a.txt", "file-extract", 1, "x", i) for i in range(3)]
    assert [f["id"] for f in kimi_page(files, {})["data"]] == ["c0", "c1", "c2"]
    assert [f["id"] for f in kimi_page(files, {"after": "c0"})["data"]] == ["c1", "c2"]
    assert kimi_page(files, {"after": "c2"}) == {"object": "list", "data": []}
    assert kimi_page(files, {"after": "nope"}) == {"object": "list", "data": []}


@pytest.mark.parametrize(
    "query",
    [
        {"purpose": "agent", "limit": "0"},
        {"purpose": "agent", "limit": "101"},
        {"purpose": "agent", "order": "up"},
    ],
)
def test_glm_page_rejects_bad_query(query: dict[str, str]) -> None:
    """limit outside 1..100 or an unknown order → 400 code 1214."""
    got = glm_page(_files(1), query, GLM_LIMITS)
    assert isinstance(got, ApiError)
    assert (got.status, got.code) == (400, "1214")


def test_extracted_kimi_json_and_placeholder() -> None:
    """Moonshot content is JSON with the text for text types, a placeholder otherwise."""
    text = StoredFile("kimi", "c1", "n.md", "file-extract", 2, "x", 0)
    body, ctype = extracted(text, b"# hi")
    assert ctype == "application/json"
    assert b'"content": "# hi"' in body
    pdf = StoredFile("kimi", "c2", "n.pdf", "file-extract", 9, "x", 0)
    body, _ = extracted(pdf, None)
    assert b"[emulator: extracted text of n.pdf, 9 bytes]" in body


def test_store_usage_tracks_add_and_remove() -> None:
    """Occupancy counts files, bytes and per-purpose counts through add and remove."""
    store = Accounts()
    for f in _files(3):
        store.add(f)
    store.remove("glm", "id1")
    assert store.usage("glm") == Occupancy(2, 2, {"agent": 2})
    assert [f.id for f in store.of("glm")] == ["id0", "id2"]


def test_emulator_help_names_every_fault_kind() -> None:
    """``inboxd emulator --help`` names every fault kind the spec parser accepts."""
    text = build_parser().format_help()
    missing = [kind for kind in sorted(FAULT_KINDS) if kind not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('form-data; name="file"; filename="say %22hi%22.txt"', "say %22hi%22.txt"),
        ('form-data; name="file"; filename="a\\\\b.txt"', "a\\b.txt"),
        ('form-data; name="file"; filename="\\\\lead.txt"', "\\lead.txt"),
        ('form-data; name="file"; filename="a;b;c=d.txt"', "a;b;c=d.txt"),
        ('form-data; name="file"; filename="r\u00e9sum\u00e9.txt"', "r\u00e9sum\u00e9.txt"),
        ("form-data; name=file; filename=plain.txt", "plain.txt"),
        ('form-data; name="file"; filename="x"; filename*=UTF-8\'\'%E6%96%87.txt', "\u6587.txt"),
        ('form-data; name="file"', None),
    ],
)
def test_disposition_filename(header: str, expected: str | None) -> None:
    """The stored filename is the quoted-string as sent: quoted-pairs read, nothing decoded."""
    params = disposition_params(header)
    assert params["name"] == "file"
    assert params.get("filename") == expected
