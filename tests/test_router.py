"""Table tests for the pure router: preference, fallback, limits, parking and rejection."""

from __future__ import annotations

import math

import pytest

from providers.limits import LIMITS, MIB
from providers.router import Route, route

NONE: dict[str, float | None] = {}


def _route(
    preference: list[str],
    *,
    size: int = 1000,
    extension: str = "pdf",
    purposes: dict[str, str] | None = None,
    availability: dict[str, float | None] | None = None,
) -> Route:
    return route(
        preference=preference,
        size=size,
        extension=extension,
        purposes=purposes or {},
        limits=LIMITS,
        availability=availability or NONE,
    )


def test_preference_order_is_kept() -> None:
    """With every provider available, candidates follow the inbox's order exactly."""
    assert _route(["glm", "kimi"]).candidates == ("glm", "kimi")
    assert _route(["kimi", "glm"]).candidates == ("kimi", "glm")


def test_never_size_based_selection() -> None:
    """A small file does not prefer the provider with the smaller limit, or vice versa."""
    small = _route(["kimi", "glm"], size=10)
    large_ok = _route(["glm", "kimi"], size=19 * MIB)
    assert (small.candidates, large_ok.candidates) == (("kimi", "glm"), ("glm", "kimi"))


def test_fallback_when_preferred_is_open() -> None:
    """An open preferred provider is skipped (with why) and the next one is the candidate."""
    got = _route(["kimi", "glm"], availability={"kimi": 1234.0, "glm": None})
    assert got == Route(
        candidates=("glm",),
        excluded={"kimi": "unavailable until 1234"},
        purposes={"kimi": "file-extract", "glm": "agent"},
    )


def test_file_fits_one_provider_but_not_the_other() -> None:
    """A 30 MiB pdf is too large for GLM's agent purpose (20 MiB) but fits Kimi (100 MiB)."""
    got = _route(["glm", "kimi"], size=30 * MIB)
    assert got.candidates == ("kimi",)
    assert got.excluded == {
        "glm": f"too_large: glm (agent): {30 * MIB} bytes > {20 * MIB} bytes",
    }
    assert got.rejection is None


def test_type_fits_one_provider_only() -> None:
    """A .py file is accepted by Kimi's file-extract but not by GLM's agent purpose."""
    got = _route(["glm", "kimi"], extension="py")
    assert got.candidates == ("kimi",)
    assert got.excluded["glm"].startswith("type_not_allowed: glm (agent): .py not in ")


def test_image_sub_limit_applies() -> None:
    """A 6 MiB png passes GLM file-extract's 50 MiB but not its 5 MiB image limit."""
    got = _route(["glm"], size=6 * MIB, extension="png", purposes={"glm": "file-extract"})
    assert got.rejection == ("too_large", f"glm (file-extract): {6 * MIB} bytes > {5 * MIB} bytes")


def test_all_open_parks_until_earliest_reopening() -> None:
    """Every eligible provider unavailable: no candidates, parked until the earliest reopening."""
    got = _route(["kimi", "glm"], availability={"kimi": 900.0, "glm": 300.0})
    assert (got.candidates, got.park_until, got.rejection) == ((), 300.0, None)


def test_parking_ignores_ineligible_providers() -> None:
    """The park time comes only from providers that could take the file."""
    got = _route(["glm", "kimi"], size=30 * MIB, availability={"glm": 10.0, "kimi": 500.0})
    assert (got.candidates, got.park_until) == ((), 500.0)


def test_forced_open_everywhere_parks_until_reset() -> None:
    """Providers forced open by AuthFailed park the file until a reset (math.inf)."""
    got = _route(["kimi"], availability={"kimi": math.inf})
    assert (got.park_until, got.excluded) == (math.inf, {"kimi": "unavailable until reset"})


@pytest.mark.parametrize(
    ("size", "extension", "expected_reason", "expected_detail"),
    [
        (
            200 * MIB,
            "pdf",
            "too_large",
            f"kimi (file-extract): {200 * MIB} bytes > {100 * MIB} bytes; "
            f"glm (agent): {200 * MIB} bytes > {20 * MIB} bytes",
        ),
        (
            10,
            "exe",
            "type_not_allowed",
            "kimi (file-extract): .exe not in ",
        ),
    ],
)
def test_rejection_names_every_limit(
    size: int, extension: str, expected_reason: str, expected_detail: str
) -> None:
    """A file no provider accepts is rejected with a reason and a detail naming each limit."""
    got = _route(["kimi", "glm"], size=size, extension=extension)
    assert got.candidates == ()
    assert got.rejection is not None
    assert got.rejection[0] == expected_reason
    assert got.rejection[1].startswith(expected_detail)
    assert "glm (agent)" in got.rejection[1]


def test_mixed_refusals_report_too_large() -> None:
    """When one provider refuses the type and another the size, the size is the reason."""
    got = _route(["glm", "kimi"], size=200 * MIB, extension="py")
    assert got.rejection is not None
    assert got.rejection[0] == "too_large"


def test_unknown_purpose_and_provider_are_excluded_with_why() -> None:
    """A purpose the table lacks, or a provider without limits, is excluded and explained."""
    got = _route(["kimi", "acme", "glm"], purposes={"kimi": "nonsense"})
    assert got.candidates == ("glm",)
    assert got.excluded["kimi"].startswith("unknown_purpose: kimi (nonsense): purpose not in ")
    assert got.excluded["acme"] == "unknown_provider: acme: no limits table for this provider"


def test_empty_preference_is_rejected() -> None:
    """An inbox naming no provider cannot route anything."""
    assert _route([]).rejection == ("no_provider", "the inbox names no provider")


def test_duplicate_preference_entries_count_once() -> None:
    """A provider named twice is tried once."""
    assert _route(["kimi", "kimi", "glm"]).candidates == ("kimi", "glm")
