from __future__ import annotations

from sentinel.admission import QUIET_S, Admission


def test_cap_refuses_new_ids_and_raises_one_aggregated_alert() -> None:
    gate = Admission(max_devices=3)
    assert all(gate.admit(f"dev-{i}") for i in range(3))
    assert gate.admit("dev-1")  # known ids stay admitted
    assert not any(gate.admit(f"fake-{i}") for i in range(10_000))
    assert len(gate.known) == 3
    raised = gate.transitions(now=1000.0)
    assert [t.firing for t in raised] == [True]
    assert raised[0].evidence["refused_messages"] == 10_000
    assert raised[0].evidence["sample_ids"] == "fake-0, fake-1, fake-2"
    gate.admit("fake-x")
    assert gate.transitions(now=1100.0) == []  # still one alert, not one per batch
    assert gate.transitions(now=1100.0 + QUIET_S - 1) == []
    resolved = gate.transitions(now=1100.0 + QUIET_S)
    assert [t.firing for t in resolved] == [False]
    assert gate.transitions(now=1e9) == []


def test_sample_ids_are_truncated() -> None:
    gate = Admission(max_devices=0)
    gate.admit("x" * 10_000)
    (t,) = gate.transitions(now=0.0)
    assert t.evidence["sample_ids"] == "x" * 64


def test_knows_all_follows_the_ids_admitted_so_far() -> None:
    gate = Admission(max_devices=10)
    fleet = frozenset({"a", "b", "c"})
    assert not gate.knows_all(fleet)
    gate.admit("a")
    gate.admit("b")
    assert not gate.knows_all(fleet)  # asked again with no new id: still short
    gate.admit("x")
    assert not gate.knows_all(fleet)  # a new id, but not the missing one
    gate.admit("c")
    assert gate.knows_all(fleet)
    assert gate.knows_all(fleet)
    assert not gate.knows_all(frozenset({"a", "d"}))  # another set is checked on its own
    assert gate.knows_all(frozenset())


def test_knows_all_is_false_for_ids_the_cap_refused() -> None:
    gate = Admission(max_devices=2)
    fleet = frozenset({"a", "b", "c"})
    for device_id in sorted(fleet):
        gate.admit(device_id)
    assert not gate.knows_all(fleet)
