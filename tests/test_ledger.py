"""The ledger's pure transition table and the fields a transition writes."""

from __future__ import annotations

import itertools

import pytest

from handlers.ledger import (
    ACTIVE_STATES,
    FINAL_STATES,
    STATES,
    TRANSITIONS,
    check_transition,
    transition_fields,
)
from providers.errors import InboxdError, InvalidTransition

ALLOWED = {
    ("pending", "pending"),
    ("pending", "uploading"),
    ("pending", "quarantined"),
    ("pending", "done"),
    ("uploading", "uploading"),
    ("uploading", "uploaded"),
    ("uploading", "pending"),
    ("uploading", "quarantined"),
    ("uploaded", "uploaded"),  # its extracted text waits (not_before)
    ("uploaded", "done"),
    ("uploaded", "quarantined"),
    ("quarantined", "requeued"),
}
ALL_PAIRS = list(itertools.product(STATES, STATES))


@pytest.mark.parametrize(("from_state", "to_state"), sorted(ALLOWED))
def test_allowed_transitions_pass(from_state: str, to_state: str) -> None:
    """Every transition in the design's table is accepted (no exception is the verdict)."""
    check_transition(from_state, to_state)


@pytest.mark.parametrize(
    ("from_state", "to_state"), [pair for pair in ALL_PAIRS if pair not in ALLOWED]
)
def test_every_other_transition_raises(from_state: str, to_state: str) -> None:
    """Every pair of states not in the table raises InvalidTransition naming both states."""
    with pytest.raises(InvalidTransition) as info:
        check_transition(from_state, to_state)
    assert (info.value.from_state, info.value.to_state) == (from_state, to_state)
    assert f"{from_state} → {to_state}" in str(info.value)


@pytest.mark.parametrize(("from_state", "to_state"), [("pending", "bogus"), ("bogus", "done")])
def test_unknown_states_raise(from_state: str, to_state: str) -> None:
    """A state name outside STATES is refused, never silently allowed."""
    with pytest.raises(InvalidTransition, match="unknown state 'bogus'"):
        check_transition(from_state, to_state)


def test_state_sets_partition_the_states() -> None:
    """Active and final states together are exactly STATES, with no overlap."""
    assert set(STATES) == ACTIVE_STATES | FINAL_STATES
    assert not ACTIVE_STATES & FINAL_STATES
    assert issubclass(InvalidTransition, InboxdError)


def test_table_is_exactly_the_design() -> None:
    """TRANSITIONS holds exactly the designed pairs: done and requeued are terminal."""
    assert {(frm, to) for frm, tos in TRANSITIONS.items() for to in tos} == ALLOWED
    assert TRANSITIONS["done"] == TRANSITIONS["requeued"] == frozenset()


@pytest.mark.parametrize(
    ("from_state", "to_state", "given", "stamped"),
    [
        ("pending", "uploading", {}, {"intent_at": 50.0}),
        ("uploading", "uploading", {}, {"intent_at": 50.0}),
        ("pending", "uploading", {"intent_at": 7.0}, {"intent_at": 7.0}),
        ("uploading", "uploaded", {"file_id": "f"}, {"uploaded_at": 50.0, "file_id": "f"}),
        ("uploaded", "done", {}, {"finished_at": 50.0}),
        ("pending", "done", {"dedupe_of": 3}, {"finished_at": 50.0, "dedupe_of": 3}),
        ("pending", "quarantined", {"reason": "empty"}, {"finished_at": 50.0, "reason": "empty"}),
        ("uploading", "pending", {"not_before": 90.0}, {"not_before": 90.0}),
        ("quarantined", "requeued", {}, {}),
    ],
)
def test_transition_fields_stamp_times(
    from_state: str,
    to_state: str,
    given: dict[str, object],
    stamped: dict[str, object],
) -> None:
    """Entering uploading/uploaded/done/quarantined stamps its time unless the caller gave one."""
    out = transition_fields(from_state, to_state, given, 50.0)
    assert out == {**stamped, "state": to_state, "updated_at": 50.0}


@pytest.mark.parametrize("field", ["id", "inbox", "relpath", "state", "created_at", "nonsense"])
def test_transition_fields_refuse_identity_and_unknown_columns(field: str) -> None:
    """A transition cannot rewrite a row's identity or bookkeeping, nor invent columns."""
    with pytest.raises(InvalidTransition, match=f"unknown field\\(s\\) {field}"):
        transition_fields("pending", "uploading", {field: 1}, 0.0)


def test_transition_fields_check_the_table_first() -> None:
    """A disallowed transition raises even when its fields are fine."""
    with pytest.raises(InvalidTransition, match="done → pending"):
        transition_fields("done", "pending", {}, 0.0)
