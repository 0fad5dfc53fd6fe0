"""Which waiting visitor a tunnel's client hears of next, as plain logic."""

from __future__ import annotations

from collections import Counter

import pytest

from spore.announcing import Announcements


def test_visitors_are_announced_at_once_while_the_window_has_room():
    announcements = Announcements(2, Counter().__getitem__)
    assert announcements.arrived("a", "s1") and announcements.arrived("b", "s1")
    assert not announcements.arrived("c", "s1")
    assert announcements.announced == 2 and len(announcements) == 1


def test_a_freed_place_goes_to_the_source_with_the_fewest_connections_open():
    open_from = Counter({"flood": 5, "real": 1})
    announcements = Announcements(1, open_from.__getitem__)
    announcements.arrived("first", "flood")
    announcements.arrived("f1", "flood")
    announcements.arrived("f2", "flood")
    announcements.arrived("r1", "real")
    assert announcements.left("first") == "r1"
    assert announcements.left("r1") == "f1"
    assert announcements.left("f1") == "f2"
    assert announcements.left("f2") is None and announcements.announced == 0


def test_between_equals_the_longest_waiting_goes_first():
    announcements = Announcements(1, Counter().__getitem__)
    announcements.arrived("first", "a")
    for visitor, source in (("b1", "b"), ("a1", "a"), ("c1", "c")):
        announcements.arrived(visitor, source)
    assert [announcements.left(v) for v in ("first", "b1", "a1")] == ["b1", "a1", "c1"]


def test_a_visitor_gone_before_its_turn_frees_no_place_and_is_never_announced():
    announcements = Announcements(1, Counter().__getitem__)
    announcements.arrived("first", "a")
    announcements.arrived("gone", "b")
    announcements.arrived("next", "b")
    assert announcements.left("gone") is None and announcements.announced == 1
    assert announcements.left("first") == "next"
    assert announcements.left("never seen") is None


def test_a_window_needs_room_for_one():
    with pytest.raises(ValueError):
        Announcements(0, Counter().__getitem__)
