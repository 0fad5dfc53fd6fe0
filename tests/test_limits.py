"""Raising the open-file limit, with resource.getrlimit/setrlimit faked."""

from __future__ import annotations

import resource

import pytest

from spore import limits
from spore.limits import files_for, raise_open_file_limit

INFINITY = resource.RLIM_INFINITY


class FakeLimits:
    """RLIMIT_NOFILE as the kernel would hold it; ``refuse`` makes setrlimit fail for soft limits above it."""

    def __init__(self, soft: int, hard: int, refuse: int | None = None, error: type[Exception] = ValueError) -> None:
        self.soft, self.hard = soft, hard
        self.refuse = refuse
        self.error = error
        self.calls: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.calls.append(limits)
        soft, hard = limits
        if hard != self.hard:
            raise AssertionError("the hard limit must be left alone")
        if self.refuse is not None and (soft == INFINITY or soft > self.refuse):
            raise self.error("not permitted")
        self.soft = soft


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


def test_an_unlimited_hard_limit_raises_the_soft_one_as_far_as_the_system_allows(fake):
    limit = fake(1024, INFINITY, refuse=1 << 16)  # like macOS or a lowered fs.nr_open
    assert raise_open_file_limit(files_for(10_000)) == (1 << 16, INFINITY, None)
    assert limit.calls == [(1 << 20, INFINITY), (1 << 16, INFINITY)]


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
