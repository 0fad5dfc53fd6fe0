"""Raising the open-file limit, with resource.getrlimit/setrlimit faked."""

from __future__ import annotations

import resource

import pytest

from spore import limits
from spore.limits import files_for, raise_open_file_limit

INFINITY = resource.RLIM_INFINITY


class FakeLimits:
    """RLIMIT_NOFILE as the kernel would hold it.

    ``refuse`` makes setrlimit fail for soft limits above it; only a
    ``privileged`` process may raise its hard limit, up to ``nr_open``.
    ``calls`` records the changes that were allowed.
    """

    def __init__(
        self, soft: int, hard: int, refuse: int | None = None, error: type[Exception] = ValueError,
        privileged: bool = False, nr_open: int = 1 << 20,
    ) -> None:
        self.soft, self.hard = soft, hard
        self.refuse = refuse
        self.error = error
        self.privileged, self.nr_open = privileged, nr_open
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        soft, hard = limits
        assert hard == INFINITY or soft <= hard
        if hard > self.hard and not self.privileged:
            raise ValueError("not allowed to raise maximum limit")
        if hard > self.hard and hard > self.nr_open:
            raise OSError("Operation not permitted")
        if self.refuse is not None and (soft == INFINITY or soft > self.refuse):
            raise self.error("not permitted")
        self.soft, self.hard = soft, hard
        self.calls.append(limits)


@pytest.fixture
def fake(monkeypatch):
    def install(*args, **kwargs) -> FakeLimits:
        limit = FakeLimits(*args, **kwargs)
        monkeypatch.setattr(resource, "getrlimit", limit.getrlimit)
        monkeypatch.setattr(resource, "setrlimit", limit.setrlimit)
        return limit

    return install


def test_the_soft_limit_is_raised_to_the_hard_limit(fake):
    limit = fake(1024, 524288)
    assert raise_open_file_limit() == (524288, 524288, None)
    assert limit.calls == [(524288, 524288)]


def test_a_soft_limit_already_at_the_hard_limit_is_left_alone(fake):
    limit = fake(4096, 4096)
    assert raise_open_file_limit(files_for(1000)) == (4096, 4096, None)
    assert limit.calls == []


def test_a_hard_limit_too_low_for_what_is_wanted_is_said_plainly(fake):
    fake(256, 1024)
    soft, hard, warning = raise_open_file_limit(files_for(10_000))
    assert (soft, hard) == (1024, 1024)
    assert warning == (
        "the open-file hard limit is 1024; holding 10000 connections needs about 20064 open files "
        "(2 per connection): raise it with ulimit -Hn or LimitNOFILE="
    )


def test_a_hard_limit_that_suffices_gives_no_warning(fake):
    fake(1024, 65536)
    assert raise_open_file_limit(files_for(10_000)) == (65536, 65536, None)


def test_a_privileged_process_raises_its_hard_limit_too(fake):
    limit = fake(1024, 20_000, privileged=True)  # root, with the 20,000 of the development machine
    assert raise_open_file_limit(files_for(10_000)) == (1 << 20, 1 << 20, None)
    assert limit.calls == [(1024, 1 << 20), (1 << 20, 1 << 20)]


def test_a_privileged_raise_stops_where_the_system_caps_it(fake):
    fake(1024, 20_000, privileged=True, nr_open=500_000)
    assert raise_open_file_limit(files_for(10_000)) == (1 << 16, 1 << 16, None)


def test_a_privileged_process_keeps_a_hard_limit_already_high_enough(fake):
    limit = fake(1024, 1 << 21, privileged=True)
    assert raise_open_file_limit() == (1 << 21, 1 << 21, None)
    assert limit.calls == [(1 << 21, 1 << 21)]


def test_an_unlimited_hard_limit_raises_the_soft_one_as_far_as_the_system_allows(fake):
    limit = fake(1024, INFINITY, refuse=1 << 16)  # like macOS or a lowered fs.nr_open
    assert raise_open_file_limit(files_for(10_000)) == (1 << 16, INFINITY, None)
    assert limit.calls == [(1 << 16, INFINITY)]


def test_an_unlimited_soft_limit_is_never_lowered(fake):
    limit = fake(INFINITY, INFINITY)
    assert raise_open_file_limit(files_for(10_000)) == (INFINITY, INFINITY, None)
    assert limit.calls == []


def test_a_refused_raise_keeps_the_old_limit_and_says_why(fake):
    fake(1024, 65536, refuse=1024, error=OSError)
    soft, hard, warning = raise_open_file_limit()
    assert (soft, hard) == (1024, 65536)
    assert warning == "could not raise the open-file limit from 1024 towards 65536: not permitted"


def test_a_refused_raise_below_what_is_wanted_says_so(fake):
    fake(1024, 65536, refuse=1024)
    _, _, warning = raise_open_file_limit(files_for(10_000))
    assert warning.startswith("could not raise the open-file limit from 1024 towards 65536")


def test_files_for_counts_two_sockets_per_connection_and_some_to_spare():
    assert files_for(0) == limits.RESERVED_FILES
    assert files_for(10_000) == 20_000 + limits.RESERVED_FILES


def test_the_real_limit_ends_with_the_soft_limit_at_the_hard_limit():
    soft, hard, warning = raise_open_file_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    assert hard == INFINITY or soft == hard
    assert warning is None
