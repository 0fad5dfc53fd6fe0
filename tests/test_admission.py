"""The admission table's rules, as plain logic, and the summary of what was turned away."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from spore.admission import BUSIEST, SCAN, SOURCE_SHARE, Admission, share_of
from spore.metrics import ServerMetrics
from spore.shedding import LOUD, SUMMARY_EVERY, TurnedAway


def fill(table: Admission, sources: dict[str, int]) -> list[tuple[str, int]]:
    """Admit ``count`` connections from each source, in order; the connections are (source, n) pairs."""
    admitted = []
    for source, count in sources.items():
        for n in range(count):
            assert table.admit((source, n), source).admitted
            admitted.append((source, n))
    return admitted


def test_a_table_with_room_admits_without_shedding():
    table = Admission(4, 2)
    verdict = table.admit("a", "10.0.0.1")
    assert verdict.admitted and verdict.shed is None
    assert len(table) == 1 and "a" in table and table.held_by("10.0.0.1") == 1


def test_a_source_at_its_share_displaces_its_own_longest_stalled_even_with_room():
    table = Admission(100, 2)
    fill(table, {"10.0.0.1": 2})
    table.progressed(("10.0.0.1", 0))
    verdict = table.admit("third", "10.0.0.1")
    assert verdict.admitted and verdict.shed == ("10.0.0.1", 1)
    assert len(table) == 2 and table.held_by("10.0.0.1") == 2


def test_a_source_at_its_share_with_nothing_to_shed_is_refused():
    table = Admission(100, 1)
    fill(table, {"10.0.0.1": 1})
    table.keep(("10.0.0.1", 0))
    verdict = table.admit("second", "10.0.0.1")
    assert not verdict.admitted and verdict.reason == SOURCE_SHARE and "second" not in table


def test_a_full_table_sheds_the_longest_stalled_of_the_busiest_source():
    table = Admission(6, 3)
    fill(table, {"a": 1, "b": 3, "c": 2})
    verdict = table.admit("newcomer", "d")
    assert verdict.admitted and verdict.shed == ("b", 0)
    assert ("b", 0) not in table and table.held_by("b") == 2 and len(table) == 6


def test_progress_moves_a_connection_to_the_back_of_the_line():
    table = Admission(4, 4)
    fill(table, {"a": 4})
    table.progressed(("a", 0))
    table.progressed(("a", 1))
    assert table.admit("b", "b").shed == ("a", 2)
    assert table.admit("c", "c").shed == ("a", 3)
    assert table.admit("d", "d").shed == ("a", 0)


def test_a_failed_connection_is_the_first_shed():
    table = Admission(3, 3)
    fill(table, {"a": 3})
    table.stalled(("a", 2))
    assert table.admit("b", "b").shed == ("a", 2)


def test_a_newcomer_whose_source_would_hold_the_most_displaces_its_own():
    table = Admission(4, 4)
    fill(table, {"b": 1, "a": 3})
    assert table.admit("a4", "a").shed == ("a", 0)
    assert len(table) == 4 and table.held_by("a") == 3 and table.held_by("b") == 1


def test_a_newcomer_is_refused_when_none_of_its_own_may_be_shed():
    table = Admission(3, 3)
    fill(table, {"few": 2, "other": 1})
    table.keep(("few", 0))
    table.keep(("few", 1))
    # Its source would weigh the most, but its connections are kept.
    assert table.admit(("few", 2), "few").reason == BUSIEST
    assert table.admit("new", "new").shed == ("other", 0)


def test_with_one_slot_each_a_full_table_sheds_its_longest_stalled():
    table = Admission(3, 1)
    fill(table, {"a": 1, "b": 1, "c": 1})
    assert table.admit("d", "d").shed == ("a", 0)
    assert table.admit("a again", "a").shed == ("b", 0)


def test_an_owed_source_may_hold_up_to_twice_its_share_and_is_shed_last():
    owed = {"owner": 10}
    table = Admission(8, 2, allowance=lambda source: owed.get(source, 0))
    fill(table, {"owner": 4})
    assert table.admit("fifth", "owner").shed == ("owner", 0)  # owed 10, but at most the share again
    table.release(("owner", 2))
    table.release(("owner", 3))
    fill(table, {"x": 2, "y": 2, "z": 2})
    # Full: the owner's are the longest-stalled, but none is beyond what it is owed.
    assert table.admit("w", "w").shed == ("x", 0)
    owed["owner"] = 0
    assert table.admit("v", "v").shed == ("owner", 1)


def test_only_the_longest_stalled_are_looked_at():
    table = Admission(SCAN + 2, SCAN + 2)
    fill(table, {"many": SCAN})
    fill(table, {"few": 2})
    # "few" holds fewer, but the first SCAN are all "many"'s: the choice stays cheap.
    assert table.admit("new", "new").shed == ("many", 0)


def test_releasing_twice_or_what_was_never_held_is_harmless():
    table = Admission(2, 2)
    table.admit("a", "s")
    table.release("a")
    table.release("a")
    table.release("never")
    table.progressed("never")
    assert len(table) == 0 and table.held_by("s") == 0


def test_iterating_gives_a_copy_longest_stalled_first():
    table = Admission(3, 3)
    fill(table, {"a": 3})
    table.progressed(("a", 0))
    for connection in table:
        table.release(connection)
    assert len(table) == 0


@pytest.mark.parametrize("capacity, share", [(1024, 128), (128, 16), (16, 2), (2, 1), (1, 1)])
def test_a_source_is_given_an_eighth(capacity, share):
    assert share_of(capacity) == share


def test_an_empty_table_is_refused():
    with pytest.raises(ValueError):
        Admission(0, 1)


def test_what_was_turned_away_is_counted_at_once_and_summed_up_in_one_line():
    clock, metrics = Clock(), ServerMetrics()
    turned_away = TurnedAway(clock, metrics)
    with capturedLogs() as events:
        for _ in range(300):
            turned_away.shed("stalled_handshake", "control port")
        turned_away.refused("source_share", "port 20345")
        assert metrics.registry.get_sample_value("spore_connections_shed_total", {"reason": "stalled_handshake"}) == 300
        assert metrics.registry.get_sample_value("spore_connections_refused_total", {"reason": "source_share"}) == 1
        assert events == []
        clock.advance(SUMMARY_EVERY)
    (event,) = events
    assert event["log_level"] == LogLevel.warn
    assert event["total"] == 301
    assert event["counts"] == {"control port/stalled_handshake": 300, "port 20345/source_share": 1}
    assert "300 handshakes shed for making no progress" in event["why"]
    # Nothing more to say: no timer left running.
    assert clock.getDelayedCalls() == []


def test_stopping_says_what_is_left_at_once():
    clock = Clock()
    turned_away = TurnedAway(clock, ServerMetrics())
    turned_away.refused("address", "control port")
    with capturedLogs() as events:
        turned_away.stop()
    assert [e["total"] for e in events] == [1] and clock.getDelayedCalls() == []


def test_failed_handshakes_are_logged_one_by_one_only_for_the_first_few():
    clock = Clock()
    turned_away = TurnedAway(clock, ServerMetrics())
    said = []
    with capturedLogs() as events:
        for n in range(LOUD + 3):
            turned_away.failed("timeout", "control port", lambda n=n: said.append(n))
        assert said == list(range(LOUD)) and events == []
        clock.advance(SUMMARY_EVERY)
        (summary,) = events
        assert summary["counts"] == {"control port/timeout": 3}
        # A new period: the next few are logged again, and all of them were.
        turned_away.failed("timeout", "control port", lambda: said.append("again"))
        clock.advance(SUMMARY_EVERY)
    assert said[-1] == "again" and len(events) == 1


def test_a_kept_connection_holds_its_slot_and_is_never_shed():
    table = Admission(3, 3)
    fill(table, {"a": 3})
    table.keep(("a", 0))
    table.keep(("a", 1))
    assert table.admit("b", "b").shed == ("a", 2)
    assert table.admit("c", "c").shed == "b"
    table.keep("c")
    # Nothing left to shed: the newcomer is refused.
    assert table.admit("d", "d").reason == BUSIEST
    assert list(table) == [("a", 0), ("a", 1), "c"]
    table.release(("a", 0))
    assert len(table) == 2 and table.held_by("a") == 1
