"""inboxd's Prometheus metrics, on an injected registry.

Names follow the Vector instrumentation spec: ``_total`` counters, base units (bytes,
seconds), no file name or path in any label. Every label combination the constructor can
know of is created at 0, so a scrape right after start already shows every series (rates and
alerts then work from the first sample instead of appearing with the first event).

Label values are checked against a short safe pattern; anything else (a path, a file name
with spaces, an empty string) is recorded as ``other`` so a bug upstream can never blow up
cardinality or leak a path into the time-series database.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from daemon.runtime.failures import STAGES as FILE_ERROR_STAGES
from handlers.extract import EXTRACT_OUTCOMES
from providers.errors import REASONS, Reason
from providers.redaction import scrub

__all__ = ["BREAKER_STATES", "DURATION_BUCKETS", "NO_TRANSPORT", "RETRY_REASONS", "Metrics"]

logger = logging.getLogger(__name__)

# The value of inboxd_breaker_state for each state of providers.types.BreakerRecord.state.
BREAKER_STATES: Mapping[str, int] = {"closed": 0, "open": 1, "half_open": 2, "forced_open": 3}

# Upload latency: sub-second small files up to the 600 s default retry deadline.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)

# The retry reasons providers.retry reports most (error_kind of a Retryable, or retry_after).
RETRY_REASONS: tuple[str, ...] = (
    "ambiguous",
    "connection",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "retry_after",
    "throttled",
    "extract_failed",
)

# Stable codes and names only: letters, digits, ``_ . : -``; no ``/``, no spaces.
_SAFE_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_OTHER = "other"
# The transport label of a failed call, and the outcomes that always name a real transport.
NO_TRANSPORT = "none"
_SUCCESS_OUTCOMES = frozenset({"success", "reconciled"})


def _label(value: str) -> str:
    if _SAFE_LABEL.fullmatch(value) and scrub(value) == value:  # never a configured key
        return value
    logger.warning("metrics: label value rejected (not a stable code), recorded as %r", _OTHER)
    return _OTHER


class Metrics:
    """Every inboxd series, registered on ``registry`` with every known label at 0.

    ``transports`` maps each provider to its ordered transport chain; fallbacks are
    pre-created for each step down that chain. ``reasons`` are the quarantine reason codes
    (every ``providers.errors.Reason`` by default), ``retry_reasons`` the retry reason codes,
    ``outcomes`` the upload outcome codes (each pre-created per transport, and per ``"none"``
    for the failures).
    Methods are cheap and never raise: an unknown but safe label value is created on first
    use, an unsafe one is recorded as ``other``, an unknown breaker state is logged and ignored.

    It is also the dispatcher's ``providers.events.ResilienceEvents``. Count each upload
    call once: either ``upload(...)`` or, when the dispatcher reports ``upload_outcome``,
    ``upload_stored(...)`` for the bytes and duration of a stored file.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        inboxes: Sequence[str],
        providers: Sequence[str],
        transports: Mapping[str, Sequence[str]],
        outcomes: Sequence[str],
        reasons: Sequence[Reason] = REASONS,
        retry_reasons: Sequence[str] = RETRY_REASONS,
    ) -> None:
        self.registry = registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        r = registry
        self._discovered = Counter(
            "inboxd_files_discovered", "Files found in an inbox.", ["inbox"], registry=r
        )
        self._uploads = Counter(
            "inboxd_uploads",
            "Upload attempts by provider, transport and outcome.",
            ["provider", "transport", "outcome"],
            registry=r,
        )
        self._upload_bytes = Counter(
            "inboxd_upload_bytes", "Bytes stored by successful uploads.", ["provider"], registry=r
        )
        self._upload_seconds = Histogram(
            "inboxd_upload_duration_seconds",
            "Wall time of one upload request.",
            ["provider"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._quarantined = Counter(
            "inboxd_quarantined", "Files moved to quarantine.", ["reason"], registry=r
        )
        self._duplicates = Counter(
            "inboxd_duplicates",
            "Files not uploaded because the same content already was.",
            registry=r,
        )
        self._retries = Counter(
            "inboxd_retries", "Retries by provider and reason.", ["provider", "reason"], registry=r
        )
        self._fallbacks = Counter(
            "inboxd_transport_fallbacks",
            "Moves down a provider's transport chain.",
            ["provider", "from_transport", "to_transport"],
            registry=r,
        )
        self._breaker_state = Gauge(
            "inboxd_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open.",
            ["provider"],
            registry=r,
        )
        self._breaker_transitions = Counter(
            "inboxd_breaker_transitions",
            "Circuit breaker state changes by target state.",
            ["provider", "to"],
            registry=r,
        )
        self._queue_depth = Gauge("inboxd_queue_depth", "Files waiting to be uploaded.", registry=r)
        self._inflight_bytes = Gauge(
            "inboxd_inflight_bytes", "Bytes of files being uploaded right now.", registry=r
        )
        self._remote_files = Gauge(
            "inboxd_remote_files", "Files stored on the provider.", ["provider"], registry=r
        )
        self._remote_bytes = Gauge(
            "inboxd_remote_bytes", "Bytes stored on the provider.", ["provider"], registry=r
        )
        self._oldest_pending = Gauge(
            "inboxd_oldest_pending_seconds",
            "Age of the oldest file waiting in the inbox (not yet finished), from when inboxd "
            "first took it up; 0 when none waits.",
            ["inbox"],
            registry=r,
        )
        self._inboxes: set[str] = set()
        self._rate_limit = Gauge(
            "inboxd_rate_limit_rpm",
            "The provider's current upload rate limit, per minute (0: none known yet).",
            ["provider"],
            registry=r,
        )
        self._concurrency_limit = Gauge(
            "inboxd_concurrency_limit",
            "The provider's current limit of uploads at once.",
            ["provider"],
            registry=r,
        )
        self._throttled = Counter(
            "inboxd_throttled",
            "Rate-limit answers (429) from the provider.",
            ["provider"],
            registry=r,
        )
        # A gauge rather than Info: Info appends ``_info``; the spec's name is build_info.
        self._build_info = Gauge(
            "inboxd_build_info", "Always 1; the version is the label.", ["version"], registry=r
        )
        self._build_info.labels(_label(version)).set(1)
        self._file_errors = Counter(
            "inboxd_file_errors",
            "Unexpected errors while handling one file, by stage (the file waits and is retried).",
            ["stage"],
            registry=r,
        )
        for stage in FILE_ERROR_STAGES:
            self._file_errors.labels(stage)
        self._extractions = Counter(
            "inboxd_extractions",
            "Tries to fetch a file's extracted text: ok, retry (later), failed (for good).",
            ["provider", "outcome"],
            registry=r,
        )
        self._state_errors = Counter(
            "inboxd_state_errors",
            "Failed operations on the state store (the database unreachable), each retry counted.",
            registry=r,
        )
        self._states: dict[str, str] = {}
        self._retry_reasons = tuple(retry_reasons)

        for inbox in inboxes:
            self.add_inbox(inbox)
        for reason in reasons:
            self._quarantined.labels(_label(reason))
        for provider in providers:
            self._add_provider(provider, transports.get(provider, ()), outcomes)

    def _add_provider(self, provider: str, chain: Sequence[str], outcomes: Sequence[str]) -> None:
        p = _label(provider)
        for transport in chain:
            for outcome in outcomes:
                self._uploads.labels(p, _label(transport), _label(outcome))
        # A failed call is reported with transport "none" (the server's answer is the same
        # whichever client sent it); successes always name their transport.
        for outcome in outcomes:
            if outcome not in _SUCCESS_OUTCOMES:
                self._uploads.labels(p, NO_TRANSPORT, _label(outcome))
        for upper, lower in itertools.pairwise(chain):
            self._fallbacks.labels(p, _label(upper), _label(lower))
        for reason in self._retry_reasons:
            self._retries.labels(p, _label(reason))
        self._upload_bytes.labels(p)
        self._upload_seconds.labels(p)
        for state in BREAKER_STATES:
            self._breaker_transitions.labels(p, state)
        self._breaker_state.labels(p).set(0)
        self._remote_files.labels(p)
        self._remote_bytes.labels(p)
        self._rate_limit.labels(p)
        self._concurrency_limit.labels(p)
        self._throttled.labels(p)
        for outcome in EXTRACT_OUTCOMES:
            self._extractions.labels(p, outcome)

    # -- the pipeline's calls ---------------------------------------------------------------

    def add_inbox(self, name: str) -> None:
        """Create the inbox's series at 0 (at start, and for inboxes added by reload)."""
        self._discovered.labels(_label(name))
        self._oldest_pending.labels(_label(name)).set(0)
        self._inboxes.add(name)

    def file_discovered(self, inbox: str) -> None:
        self._discovered.labels(_label(inbox)).inc()

    def upload(
        self,
        provider: str,
        transport: str,
        outcome: str,
        nbytes: int = 0,
        seconds: float | None = None,
    ) -> None:
        """Count one upload request; ``nbytes`` only for a stored file, ``seconds`` if timed."""
        p = _label(provider)
        self._uploads.labels(p, _label(transport), _label(outcome)).inc()
        if nbytes:
            self._upload_bytes.labels(p).inc(nbytes)
        if seconds is not None:
            self._upload_seconds.labels(p).observe(seconds)

    def quarantined(self, reason: str) -> None:
        self._quarantined.labels(_label(reason)).inc()

    def duplicate(self) -> None:
        self._duplicates.inc()

    def retry(self, provider: str, reason: str) -> None:
        self._retries.labels(_label(provider), _label(reason)).inc()

    def fallback(self, provider: str, from_t: str, to_t: str) -> None:
        self._fallbacks.labels(_label(provider), _label(from_t), _label(to_t)).inc()

    def upload_stored(self, provider: str, nbytes: int, seconds: float) -> None:
        """Add a stored file's bytes and duration (when ``upload_outcome`` did the counting)."""
        p = _label(provider)
        self._upload_bytes.labels(p).inc(nbytes)
        self._upload_seconds.labels(p).observe(seconds)

    def breaker(self, provider: str, state: str) -> None:
        """Set the breaker gauge; count a transition when the state really changed.

        The first report of a provider only sets the gauge (a restart resuming OPEN is not a
        transition). ``state`` is a ``BreakerRecord.state`` value.
        """
        previous = self._states.get(_label(provider))
        self.breaker_state(provider, state)
        if previous is not None and previous != state and state in BREAKER_STATES:
            self.breaker_transition(provider, state)

    # -- providers.events.ResilienceEvents --------------------------------------------------

    def breaker_transition(self, provider: str, to_state: str) -> None:
        """Count a transition the dispatcher observed (it reports the state separately)."""
        self._breaker_transitions.labels(_label(provider), _label(to_state)).inc()

    def breaker_state(self, provider: str, state: str) -> None:
        """Set the breaker gauge without counting a transition."""
        if state not in BREAKER_STATES:
            # A metrics hook must never break the upload path that calls it.
            logger.warning("metrics: unknown breaker state %r ignored", state)
            return
        p = _label(provider)
        self._states[p] = state
        self._breaker_state.labels(p).set(BREAKER_STATES[state])

    def upload_outcome(self, provider: str, transport: str, outcome: str) -> None:
        """Count one upload call (bytes and duration then come through ``upload_stored``)."""
        self._uploads.labels(_label(provider), _label(transport), _label(outcome)).inc()

    def give_up(self, provider: str, reason: str) -> None:
        """Nothing to count: the file's fate (failover, park, quarantine) is counted later."""

    # -- gauges -----------------------------------------------------------------------------

    def queue_depth(self, n: int) -> None:
        self._queue_depth.set(n)

    def inflight_bytes(self, n: int) -> None:
        self._inflight_bytes.set(n)

    def oldest_pending(self, since: Mapping[str, float], *, now: float) -> None:
        """Set each inbox's oldest waiting age from ``since`` (inbox → when its oldest
        unfinished file was first taken up, wall clock); 0 for an inbox with none."""
        for inbox in self._inboxes:
            first = since.get(inbox)
            age = 0.0 if first is None else max(0.0, now - first)
            self._oldest_pending.labels(_label(inbox)).set(age)

    def remote_usage(self, provider: str, files: int, nbytes: int) -> None:
        p = _label(provider)
        self._remote_files.labels(p).set(files)
        self._remote_bytes.labels(p).set(nbytes)

    # -- providers.limited.PacingEvents -----------------------------------------------------

    def pacing_limits(self, provider: str, rpm: float | None, concurrency: int) -> None:
        """The limiter's current limits (``rpm`` None: no rate limit known, exported as 0)."""
        p = _label(provider)
        self._rate_limit.labels(p).set(0 if rpm is None else rpm)
        self._concurrency_limit.labels(p).set(concurrency)

    def throttled(self, provider: str) -> None:
        self._throttled.labels(_label(provider)).inc()

    def file_error(self, stage: str) -> None:
        """Count one unexpected error of one file at ``stage`` (``runtime.failures.STAGES``)."""
        self._file_errors.labels(_label(stage)).inc()

    def extraction(self, provider: str, outcome: str) -> None:
        """Count one try to fetch a file's text (``handlers.extract.EXTRACT_OUTCOMES``)."""
        self._extractions.labels(_label(provider), _label(outcome)).inc()

    def state_error(self) -> None:
        """Count one failed operation on the state store (``Store``'s ``on_error`` hook)."""
        self._state_errors.inc()
