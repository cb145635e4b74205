"""Fault plans for the emulator: the spec language, its parser and the per-request decision.

Pure: no I/O, no event loop. The server keeps one ``random.Random(seed)`` and one request
counter per provider and asks :func:`decide` what to do with each API request.

Spec grammar (``--faults``, ``Emulator(faults=...)``, ``PUT /_emulator/faults``)::

    spec     := section (";" section)*
    section  := target ":" item ("," item)*        target: kimi | glm | all
    item     := fault ["@" probability]             probability in [0, 1], default 1
              | "seq=" step ("/" step)*             scripted: request n gets step n, then
                                                    the probabilistic items apply
              | "latency=" MS ["+" JITTER_MS]       added before answering (jitter uniform)
              | "slow=" MS                          delay per 64 KiB chunk of request body
              | "rpm=" N                            per-key limit: at most N uploads admitted in
                                                    any rolling 60 s (emulator clock); more → 429
                                                    (Kimi rate_limit_reached_error "max RPM: N",
                                                    GLM 1303), no Retry-After, no latency
              | "concurrency=" N                    per-key limit: at most N uploads in flight;
                                                    more → 429 (Kimi "max concurrency: N", GLM
                                                    1302), answered at once
              | "none"                              no faults
    step     := "ok" | fault
    fault    := 500 | 502 | 503                     server error, nothing stored
              | 429[:SECONDS]                       transient rate limit, Retry-After SECONDS
                                                    (default 1); Moonshot rate_limit_reached_error,
                                                    GLM code "1302"
              | 429msg[:SECONDS]                    the real rate-limit answer, wait ONLY in the
                                                    message, no Retry-After: Moonshot "max RPM: N,
                                                    please try again after SECONDS seconds" (N:
                                                    the plan's rpm=, else 3), GLM 1303 (Chinese,
                                                    names no wait)
              | 429conc[:SECONDS]                   the same for concurrency: Moonshot "max
                                                    concurrency: N" (the plan's concurrency=,
                                                    else 1), GLM 1302 (Chinese)
              | balance                             Moonshot 403 "insufficient balance", GLM 1113
                                                    arrears (Chinese)
              | daily                               GLM 1304 daily call limit (Chinese); Moonshot
                                                    has none: exceeded_current_quota_error
              | cap                                 GLM 1308 usage cap "…将在 <time> 重置" with
                                                    the next midnight China time; Moonshot:
                                                    exceeded_current_quota_error
              | extract                             Moonshot 500 {"message":"extract task failed:
                                                    failed","type":""}; GLM a plain 500
              | parsefail                           GLM file parser: the task this create
                                                    request starts ends "failed" (a permanent
                                                    parse failure); no effect on other requests
              | quota                               429 that retrying cannot fix; Moonshot
                                                    exceeded_current_quota_error, GLM code "1113"
              | 401                                 authentication refused
              | reset                               body read, nothing stored, connection aborted
              | drop                                accept-then-drop: the request takes effect
                                                    (the file IS stored), then the connection is
                                                    aborted before any response

Example: ``kimi:500@0.3,429:2@0.1;glm:seq=500/500/ok,latency=20+10``. The limits
(``kimi:rpm=120,concurrency=4``) apply to uploads only (list, retrieve, delete, content and
GLM's parser requests are never limited) and are checked before any fault or latency;
refusals do not count toward the window; the bodies are in ``providers.emulator.ratelimit``.
The probabilities of one provider's faults add up to at most 1; one uniform draw per
request picks at most one. A section replaces that provider's whole plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from providers.errors import ConfigError
from providers.limits import PROVIDERS

__all__ = [
    "FAULT_KINDS",
    "Chance",
    "Decision",
    "Fault",
    "FaultPlan",
    "coerce_plans",
    "decide",
    "parse_faults",
    "parse_plan",
]

FAULT_KINDS = frozenset({"500", "502", "503", "429", "quota", "401", "reset", "drop"})
# The real providers' answers (provider-facts.md § Real answers).
FAULT_KINDS |= {"429msg", "429conc", "balance", "daily", "cap", "extract", "parsefail"}
_WAIT_KINDS = frozenset({"429", "429msg", "429conc"})  # take ":SECONDS"
_DEFAULT_RETRY_AFTER = 1


@dataclass(frozen=True)
class Fault:
    """One injected failure; ``retry_after`` (seconds) is set only for the 429 kinds.

    Only kind ``429`` sends it as a Retry-After header; ``429msg``/``429conc`` name it in
    the message text alone, as Moonshot does.
    """

    kind: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.kind if self.retry_after is None else f"{self.kind}:{self.retry_after}"


@dataclass(frozen=True)
class Chance:
    """A fault that hits each request with this probability."""

    fault: Fault
    probability: float


@dataclass(frozen=True)
class FaultPlan:
    """One provider's faults; the empty plan (the default) injects nothing.

    ``sequence`` holds scripted steps (None = answer normally) for the first requests.
    Durations are seconds.
    """

    chances: tuple[Chance, ...] = ()
    sequence: tuple[Fault | None, ...] = ()
    latency: float = 0.0
    jitter: float = 0.0
    slow: float = 0.0
    rpm: int | None = None
    concurrency: int | None = None

    def __str__(self) -> str:
        items = [
            str(c.fault) if c.probability == 1 else f"{c.fault}@{c.probability:g}"
            for c in self.chances
        ]
        if self.sequence:
            items.append("seq=" + "/".join("ok" if s is None else str(s) for s in self.sequence))
        if self.latency or self.jitter:
            items.append(f"latency={self.latency * 1000:g}+{self.jitter * 1000:g}")
        if self.slow:
            items.append(f"slow={self.slow * 1000:g}")
        if self.rpm is not None:
            items.append(f"rpm={self.rpm}")
        if self.concurrency is not None:
            items.append(f"concurrency={self.concurrency}")
        return ",".join(items) or "none"


@dataclass(frozen=True)
class Decision:
    """What to do with one request: the fault (None = answer normally) and the delays."""

    fault: Fault | None
    delay: float = 0.0
    slow: float = 0.0


def decide(plan: FaultPlan, index: int, draw: float, jitter_draw: float) -> Decision:
    """The fate of a provider's request number ``index`` (0-based), given two uniform draws."""
    delay = plan.latency + plan.jitter * jitter_draw
    if index < len(plan.sequence):
        return Decision(plan.sequence[index], delay, plan.slow)
    edge = 0.0
    for chance in plan.chances:
        edge += chance.probability
        if draw < edge:
            return Decision(chance.fault, delay, plan.slow)
    return Decision(None, delay, plan.slow)


def parse_faults(spec: str) -> dict[str, FaultPlan]:
    """Parse a whole spec into one plan per provider it names (``all`` names every one)."""
    plans: dict[str, FaultPlan] = {}
    for section in (s.strip() for s in spec.split(";")):
        if not section:
            continue
        target, sep, body = section.partition(":")
        target = target.strip().lower()
        if not sep or (target not in PROVIDERS and target != "all"):
            raise _bad(spec, f"section {section!r} must start with one of kimi:, glm:, all:")
        plan = parse_plan(body)
        for provider in PROVIDERS if target == "all" else (target,):
            plans[provider] = plan
    return plans


def parse_plan(text: str) -> FaultPlan:
    """Parse one provider's comma-separated items (the part after ``kimi:``)."""
    chances: list[Chance] = []
    sequence: tuple[Fault | None, ...] = ()
    latency = jitter = slow = 0.0
    caps: dict[str, int | None] = {"rpm": None, "concurrency": None}
    for item in (i.strip() for i in text.split(",")):
        if not item or item == "none":
            continue
        if item.startswith("seq="):
            sequence = tuple(
                None if step.strip() == "ok" else _fault(step.strip(), text)
                for step in item[4:].split("/")
            )
        elif item.startswith("latency="):
            fixed, _, extra = item[8:].partition("+")
            latency, jitter = _millis(fixed, text), _millis(extra or "0", text)
        elif item.startswith("slow="):
            slow = _millis(item[5:], text)
        elif item.partition("=")[0] in caps:
            name, _, value = item.partition("=")
            caps[name] = _whole(name, value, text)
        else:
            name, _, prob = item.partition("@")
            chances.append(Chance(_fault(name.strip(), text), _probability(prob or "1", text)))
    if sum(c.probability for c in chances) > 1 + 1e-9:
        raise _bad(text, "the probabilities of one provider's faults add up to more than 1")
    return FaultPlan(
        tuple(chances), sequence, latency, jitter, slow, caps["rpm"], caps["concurrency"]
    )


def coerce_plans(faults: str | FaultPlan | Mapping[str, FaultPlan] | None) -> dict[str, FaultPlan]:
    """Plans per provider from a spec string, one plan for every provider, or a mapping."""
    if faults is None:
        return {}
    if isinstance(faults, FaultPlan):
        return dict.fromkeys(PROVIDERS, faults)
    if isinstance(faults, str):
        return parse_faults(faults)
    return dict(faults)


def _fault(text: str, spec: str) -> Fault:
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    if kind not in FAULT_KINDS:
        raise _bad(spec, f"unknown fault {text!r}; known: {', '.join(sorted(FAULT_KINDS))}, ok")
    if kind not in _WAIT_KINDS:
        if arg:
            raise _bad(spec, f"fault {kind!r} takes no ':' argument")
        return Fault(kind)
    if not arg:
        return Fault(kind, _DEFAULT_RETRY_AFTER)
    if not arg.isdigit():
        raise _bad(spec, f"{kind}:{arg}: the wait must be whole seconds, e.g. {kind}:2")
    return Fault(kind, int(arg))


def _probability(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise _bad(spec, f"probability {text!r} must be a number from 0 to 1")
    return value


def _whole(name: str, text: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise _bad(spec, f"{name}={text}: the limit must be a whole number >= 1")
    return int(text)


def _millis(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise _bad(spec, f"duration {text!r} must be milliseconds >= 0")
    return value / 1000


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"bad emulator fault spec {spec!r}: {why} (example: kimi:500@0.3,429:2@0.1;glm:seq=500/ok)"
    )
