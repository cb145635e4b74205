"""daemon.ops.metrics: every series from start, exact names and labels, checked by real tools."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import get_args

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.config.settings import MetricsSettings
from daemon.ops.http import serve_http
from daemon.ops.metrics import DURATION_BUCKETS, Metrics
from providers.errors import Reason
from tests._tools import query_until, run_prometheus

TRANSPORTS = {"kimi": ["openai", "http"], "glm": ["zhipuai", "openai", "http"]}
OUTCOMES = ["success", "retryable", "permanent", "auth", "quota"]
REASONS: list[Reason] = ["empty", "too_large", "type_not_allowed"]


def make_metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(
        registry,
        version="0.1.0",
        inboxes=["scans", "mail"],
        providers=["kimi", "glm"],
        transports=TRANSPORTS,
        reasons=REASONS,
        outcomes=OUTCOMES,
        retry_reasons=["timeout", "server_error"],
    )


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a real text exposition, keyed by name and label set."""
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return (name, frozenset(labels.items()))


def expected_zero_series() -> list[tuple[str, frozenset[tuple[str, str]]]]:
    """Every inboxd series the constructor above must create at 0."""
    out = [key("inboxd_files_discovered_total", inbox=i) for i in ("scans", "mail")]
    out += [key("inboxd_oldest_pending_seconds", inbox=i) for i in ("scans", "mail")]
    out += [key("inboxd_quarantined_total", reason=r) for r in REASONS]
    out += [key("inboxd_duplicates_total"), key("inboxd_queue_depth"), key("inboxd_inflight_bytes")]
    out += [
        key("inboxd_file_errors_total", stage=s)
        for s in ("open", "ledger", "hash", "upload", "archive", "quarantine", "recover", "other")
    ]
    for provider, chain in TRANSPORTS.items():
        out += [
            key("inboxd_uploads_total", provider=provider, transport=t, outcome=o)
            for t in chain
            for o in OUTCOMES
        ]
        out += [
            key("inboxd_uploads_total", provider=provider, transport="none", outcome=o)
            for o in OUTCOMES
            if o != "success"
        ]
        out += [
            key(
                "inboxd_transport_fallbacks_total",
                provider=provider,
                from_transport=a,
                to_transport=b,
            )
            for a, b in itertools.pairwise(chain)
        ]
        out += [
            key("inboxd_retries_total", provider=provider, reason=r)
            for r in ("timeout", "server_error")
        ]
        out += [
            key("inboxd_breaker_transitions_total", provider=provider, to=s)
            for s in ("closed", "open", "half_open", "forced_open")
        ]
        out += [
            key(name, provider=provider)
            for name in (
                "inboxd_upload_bytes_total",
                "inboxd_breaker_state",
                "inboxd_remote_files",
                "inboxd_remote_bytes",
                "inboxd_upload_duration_seconds_count",
                "inboxd_upload_duration_seconds_sum",
                "inboxd_rate_limit_rpm",
                "inboxd_concurrency_limit",
                "inboxd_throttled_total",
            )
        ]
        out += [
            key("inboxd_upload_duration_seconds_bucket", provider=provider, le=str(b))
            for b in (*DURATION_BUCKETS, "+Inf")
        ]
        out += [
            key("inboxd_extractions_total", provider=provider, outcome=o)
            for o in ("ok", "retry", "failed")
        ]
    out += [key("inboxd_state_errors_total")]
    return out


def test_every_series_exists_at_zero_from_start() -> None:
    """A scrape right after construction shows every inboxd series, each at 0."""
    registry = CollectorRegistry()
    make_metrics(registry)
    got = samples(registry)
    for series in expected_zero_series():
        assert got.get(series) == 0.0, series
    assert got[key("inboxd_build_info", version="0.1.0")] == 1.0
    # Nothing else of ours: the set above is the whole contract.
    ours = {k for k in got if k[0].startswith("inboxd_") and not k[0].endswith("_created")}
    assert ours == {*expected_zero_series(), key("inboxd_build_info", version="0.1.0")}


def test_pacing_limits_and_throttles_per_provider() -> None:
    """The limiter's limits set the two gauges (no rate known → 0) and each 429 counts once."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.pacing_limits("kimi", 120.0, 4)
    metrics.pacing_limits("glm", None, 2)
    metrics.throttled("glm")
    metrics.throttled("glm")
    got = samples(registry)
    assert got[key("inboxd_rate_limit_rpm", provider="kimi")] == 120.0
    assert got[key("inboxd_concurrency_limit", provider="kimi")] == 4.0
    assert got[key("inboxd_rate_limit_rpm", provider="glm")] == 0.0
    assert got[key("inboxd_concurrency_limit", provider="glm")] == 2.0
    assert got[key("inboxd_throttled_total", provider="glm")] == 2.0
    assert got[key("inboxd_throttled_total", provider="kimi")] == 0.0


def test_process_and_platform_collectors_are_on_the_injected_registry() -> None:
    """The process and Python platform series are on our registry, not the global one."""
    registry = CollectorRegistry()
    make_metrics(registry)
    names = {name for name, _ in samples(registry)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names


def test_histogram_buckets_reach_600_seconds() -> None:
    """The latency histogram's last finite bucket is 600 s, the default retry deadline."""
    assert DURATION_BUCKETS[-1] == 600.0
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)


@pytest.mark.parametrize(
    ("call", "series", "value"),
    [
        (
            lambda m: m.file_discovered("scans"),
            key("inboxd_files_discovered_total", inbox="scans"),
            1,
        ),
        (
            lambda m: m.upload("kimi", "openai", "success", 1000, 2.0),
            key("inboxd_uploads_total", provider="kimi", transport="openai", outcome="success"),
            1,
        ),
        (
            lambda m: m.upload("kimi", "openai", "success", 1000, 2.0),
            key("inboxd_upload_bytes_total", provider="kimi"),
            1000,
        ),
        (
            lambda m: m.upload("kimi", "openai", "success", 1000, 2.0),
            key("inboxd_upload_duration_seconds_bucket", provider="kimi", le="2.5"),
            1,
        ),
        (
            lambda m: m.upload("kimi", "openai", "success", 1000, 2.0),
            key("inboxd_upload_duration_seconds_bucket", provider="kimi", le="1.0"),
            0,
        ),
        (
            lambda m: m.upload("glm", "http", "retryable"),
            key("inboxd_upload_duration_seconds_count", provider="glm"),
            0,
        ),
        (lambda m: m.quarantined("empty"), key("inboxd_quarantined_total", reason="empty"), 1),
        (lambda m: m.duplicate(), key("inboxd_duplicates_total"), 1),
        (
            lambda m: m.retry("glm", "timeout"),
            key("inboxd_retries_total", provider="glm", reason="timeout"),
            1,
        ),
        (
            lambda m: m.retry("glm", "rate_limited"),
            key("inboxd_retries_total", provider="glm", reason="rate_limited"),
            1,
        ),
        (
            lambda m: m.fallback("glm", "zhipuai", "openai"),
            key(
                "inboxd_transport_fallbacks_total",
                provider="glm",
                from_transport="zhipuai",
                to_transport="openai",
            ),
            1,
        ),
        (lambda m: m.queue_depth(7), key("inboxd_queue_depth"), 7),
        (lambda m: m.state_error(), key("inboxd_state_errors_total"), 1),
        (lambda m: m.inflight_bytes(4096), key("inboxd_inflight_bytes"), 4096),
        (
            lambda m: m.remote_usage("kimi", 12, 3456),
            key("inboxd_remote_files", provider="kimi"),
            12,
        ),
        (
            lambda m: m.remote_usage("kimi", 12, 3456),
            key("inboxd_remote_bytes", provider="kimi"),
            3456,
        ),
        (lambda m: m.add_inbox("new"), key("inboxd_files_discovered_total", inbox="new"), 0),
        (
            lambda m: m.quarantined("/srv/inbox/secret report.pdf"),
            key("inboxd_quarantined_total", reason="other"),
            1,
        ),
    ],
)
def test_each_call_moves_exactly_its_series(
    call: Callable[[Metrics], None], series: tuple[str, frozenset[tuple[str, str]]], value: float
) -> None:
    """Each pipeline call sets its series to the exact value in the table."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    call(metrics)
    assert samples(registry)[series] == value


def test_no_label_value_is_ever_a_path() -> None:
    """A path or file name passed by mistake is recorded as ``other``, never as a label."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.file_discovered("../etc/passwd")
    metrics.upload("kimi", "openai", "a file.pdf", 1, 1.0)
    text = generate_latest(registry).decode()
    assert "passwd" not in text
    assert "a file.pdf" not in text
    assert samples(registry)[key("inboxd_files_discovered_total", inbox="other")] == 1


def test_breaker_sets_gauge_and_counts_only_real_transitions() -> None:
    """The gauge follows each report; a transition is counted only when the state changed."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.breaker("kimi", "open")  # first report (restart resuming OPEN): no transition
    metrics.breaker("kimi", "open")
    metrics.breaker("kimi", "half_open")
    metrics.breaker("kimi", "closed")
    metrics.breaker("kimi", "forced_open")
    got = samples(registry)
    assert got[key("inboxd_breaker_state", provider="kimi")] == 3
    assert got[key("inboxd_breaker_state", provider="glm")] == 0
    counts = {
        s: got[key("inboxd_breaker_transitions_total", provider="kimi", to=s)]
        for s in ("closed", "open", "half_open", "forced_open")
    }
    assert counts == {"closed": 1, "open": 0, "half_open": 1, "forced_open": 1}


def test_breaker_ignores_an_unknown_state(caplog: pytest.LogCaptureFixture) -> None:
    """An unknown breaker state changes nothing and is logged, never raised into the caller."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.breaker("kimi", "open")
    metrics.breaker("kimi", "ajar")
    got = samples(registry)
    assert got[key("inboxd_breaker_state", provider="kimi")] == 1
    assert got[key("inboxd_breaker_transitions_total", provider="kimi", to="open")] == 0
    assert [r.getMessage() for r in caplog.records] == [
        "metrics: unknown breaker state 'ajar' ignored"
    ]


def test_two_instances_do_not_collide_on_separate_registries() -> None:
    """Nothing is registered globally: two Metrics on two registries coexist."""
    first, second = CollectorRegistry(), CollectorRegistry()
    make_metrics(first).duplicate()
    make_metrics(second)
    assert samples(first)[key("inboxd_duplicates_total")] == 1
    assert samples(second)[key("inboxd_duplicates_total")] == 0


def test_resilience_events_count_like_the_dispatcher_reports() -> None:
    """The dispatcher's hooks move the same series: one count per call, gauge and transitions."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.breaker_state("glm", "open")  # first load: gauge only
    metrics.breaker_transition("glm", "half_open")
    metrics.breaker_state("glm", "half_open")
    metrics.upload_outcome("glm", "none", "http_503")
    metrics.retry("glm", "http_503")
    metrics.upload_outcome("glm", "zhipuai", "success")
    metrics.upload_stored("glm", 5000, 0.7)
    metrics.give_up("glm", "attempts_exhausted")
    got = samples(registry)
    assert got[key("inboxd_breaker_state", provider="glm")] == 2
    assert got[key("inboxd_breaker_transitions_total", provider="glm", to="half_open")] == 1
    assert got[key("inboxd_breaker_transitions_total", provider="glm", to="open")] == 0
    assert (
        got[key("inboxd_uploads_total", provider="glm", transport="none", outcome="http_503")] == 1
    )
    assert (
        got[key("inboxd_uploads_total", provider="glm", transport="zhipuai", outcome="success")]
        == 1
    )
    assert got[key("inboxd_retries_total", provider="glm", reason="http_503")] == 1
    assert got[key("inboxd_upload_bytes_total", provider="glm")] == 5000
    assert got[key("inboxd_upload_duration_seconds_count", provider="glm")] == 1
    assert not any("attempts_exhausted" in str(k) for k in got)


def test_metrics_has_every_resilience_events_method() -> None:
    """Metrics offers each ResilienceEvents method with the same parameters (when it exists)."""
    dispatch = pytest.importorskip("providers.dispatch")
    protocol = dispatch.ResilienceEvents
    names = [n for n in vars(protocol) if not n.startswith("_")]
    assert names == ["retry", "breaker_transition", "breaker_state", "upload_outcome", "give_up"]
    for name in names:
        ours = inspect.signature(getattr(Metrics, name))
        theirs = inspect.signature(getattr(protocol, name))
        assert list(ours.parameters) == list(theirs.parameters), name


# -- the real tools -----------------------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[Metrics, int]]:
    """A Metrics served by serve_http on a free loopback port."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_http, MetricsSettings(listen="127.0.0.1:0"), registry, list)
        yield metrics, port
        tg.cancel_scope.cancel()


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return response.text


@pytest.mark.anyio
async def test_promtool_finds_a_real_scrape_clean(
    served: tuple[Metrics, int], need_tool: Callable[[str], str]
) -> None:
    """``promtool check metrics`` reports nothing on a scrape of serve_http over loopback."""
    promtool = need_tool("promtool")
    metrics, port = served
    metrics.upload("glm", "zhipuai", "success", 10, 0.3)
    metrics.breaker("glm", "open")
    body = await scrape(port)
    result = await anyio.run_process(
        [promtool, "check", "metrics"], input=body.encode(), check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


@pytest.fixture
async def prometheus(
    served: tuple[Metrics, int], tmp_path: Path, need_tool: Callable[[str], str]
) -> AsyncIterator[int]:
    """A real Prometheus server on loopback scraping ``served`` every second; yields its port."""
    need_tool("prometheus")
    async with run_prometheus(tmp_path, f"127.0.0.1:{served[1]}") as port:
        yield port


@pytest.mark.anyio
async def test_real_prometheus_scrapes_the_upload_counter(
    served: tuple[Metrics, int], prometheus: int
) -> None:
    """A real Prometheus scrapes serve_http and its query API returns the upload we counted."""
    metrics, _ = served
    metrics.upload("kimi", "openai", "success", 2048, 1.5)
    promql = 'inboxd_uploads_total{provider="kimi",transport="openai",outcome="success"}'
    result = await query_until(prometheus, promql)
    # Every pre-created series was scraped too, at 0.
    zeros = await query_until(prometheus, 'inboxd_uploads_total{outcome="quota"}')
    assert len(result) == 1
    assert result[0]["metric"] == {
        "__name__": "inboxd_uploads_total",
        "instance": result[0]["metric"]["instance"],  # type: ignore[index]
        "job": "inboxd",
        "provider": "kimi",
        "transport": "openai",
        "outcome": "success",
    }
    assert result[0]["value"][1] == "1"  # type: ignore[index]
    assert sorted(z["metric"]["transport"] for z in zeros) == [  # type: ignore[index]
        "http",
        "http",
        "none",
        "none",
        "openai",
        "openai",
        "zhipuai",
    ]


def test_oldest_pending_is_the_age_of_each_inboxs_oldest_waiting_file() -> None:
    """inboxd_oldest_pending_seconds{inbox} is now minus the oldest waiting file's first take-up,
    0 for an inbox with none waiting (and again 0 once its files are gone)."""
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.oldest_pending({"scans": 1000.0, "gone": 10.0}, now=4600.0)
    got = samples(registry)
    assert got[key("inboxd_oldest_pending_seconds", inbox="scans")] == 3600.0
    assert got[key("inboxd_oldest_pending_seconds", inbox="mail")] == 0.0
    assert key("inboxd_oldest_pending_seconds", inbox="gone") not in got
    metrics.oldest_pending({}, now=5000.0)
    assert samples(registry)[key("inboxd_oldest_pending_seconds", inbox="scans")] == 0.0


def test_rate_limit_and_extraction_retries_exist_at_zero() -> None:
    """With the default retry reasons, throttled and extract_failed retries are series at 0."""
    registry = CollectorRegistry()
    Metrics(
        registry,
        version="0",
        inboxes=[],
        providers=["kimi"],
        transports={"kimi": ["http"]},
        reasons=[],
        outcomes=[],
    )
    got = samples(registry)
    for reason in ("throttled", "extract_failed"):
        assert got[key("inboxd_retries_total", provider="kimi", reason=reason)] == 0.0


def test_every_quarantine_reason_exists_at_zero_by_default() -> None:
    """Built without ``reasons``, inboxd_quarantined_total has one series at 0 for every
    ``providers.errors.Reason``, and no other."""
    registry = CollectorRegistry()
    Metrics(
        registry,
        version="0",
        inboxes=[],
        providers=[],
        transports={},
        outcomes=[],
    )
    got = {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(registry).items()
        if name == "inboxd_quarantined_total"
    }
    assert got == dict.fromkeys(get_args(Reason), 0.0)
