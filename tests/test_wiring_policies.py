"""Retry and breaker policies are built from their settings sections, field by field by name."""

from __future__ import annotations

import dataclasses

from daemon.config.settings import BreakerSettings, ProviderSettings, RetrySettings, Settings
from daemon.runtime.wiring import breaker_config, retry_policy
from providers.breaker import BreakerConfig
from providers.retry import RetryPolicy

# Policy fields no config key sets: the retry loop's "later" pacing, and the probe lease
# (derived from the provider's timeout).
RETRY_ONLY = {"later_base", "later_cap"}
BREAKER_ONLY = {"probe_lease"}


def test_every_settings_knob_is_a_policy_field_of_the_same_name() -> None:
    """The settings models and the policy dataclasses name the same fields (a new knob
    cannot be added to one and forgotten in the other), apart from the listed extras."""
    retry_fields = {f.name for f in dataclasses.fields(RetryPolicy)}
    breaker_fields = {f.name for f in dataclasses.fields(BreakerConfig)}
    assert (set(RetrySettings.model_fields), retry_fields - set(RetrySettings.model_fields)) == (
        retry_fields - RETRY_ONLY,
        RETRY_ONLY,
    )
    assert (
        set(BreakerSettings.model_fields),
        breaker_fields - set(BreakerSettings.model_fields),
    ) == (breaker_fields - BREAKER_ONLY, BREAKER_ONLY)


def _section() -> ProviderSettings:
    base = Settings().providers.get("kimi")
    retry = RetrySettings(
        attempts=7,
        base=0.5,
        cap=11.0,
        deadline=99.0,
        retry_after_cap=13.0,
        budget_ratio=0.3,
        budget_floor=4.0,
        give_up_after=17.0,
    )
    breaker = BreakerSettings(
        window=21,
        min_calls=6,
        failure_ratio=0.7,
        consecutive_failures=8,
        open_base=3.0,
        open_max=33.0,
        quota_park=77.0,
    )
    return base.model_copy(update={"retry": retry, "breaker": breaker, "timeout": 40.0})


def test_policies_carry_every_configured_value() -> None:
    """Every knob of a provider's ``retry`` and ``breaker`` sections reaches its policy; the
    probe lease is twice the timeout plus 60 s."""
    section = _section()
    assert retry_policy(section.retry) == RetryPolicy(**section.retry.model_dump())
    assert dataclasses.asdict(retry_policy(section.retry)) == {
        **section.retry.model_dump(),
        "later_base": RetryPolicy().later_base,
        "later_cap": RetryPolicy().later_cap,
    }
    assert dataclasses.asdict(breaker_config(section.breaker, section)) == {
        **section.breaker.model_dump(),
        "probe_lease": 140.0,
    }
