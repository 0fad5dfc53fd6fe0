"""bore's HMAC challenge answers, with the pairs captured from a real bore."""

from __future__ import annotations

import uuid

import pytest

from spore import auth

CAPTURED = [
    ("8a3dad3f-0d6b-4476-a051-e24b40a188e5", "c23cccb3e72be1f5fe7e5cba50e545401924c734fd60caad887483035928aa4b"),
    ("374a75d1-b906-41bc-b02e-9d744d58ca7f", "cd6b685d33e60dc0c288629d579b5382e9173c245d6afa8a8fdfd4c74d4e0733"),
]


@pytest.mark.parametrize("challenge, tag", CAPTURED)
def test_answers_match_bore(challenge, tag):
    assert auth.answer("s3cret", uuid.UUID(challenge)) == tag


@pytest.mark.parametrize("challenge, tag", CAPTURED)
def test_verify_accepts_any_of_several_secrets(challenge, tag):
    assert auth.verify(["other", "s3cret"], uuid.UUID(challenge), tag)
    assert not auth.verify(["other", "wrong"], uuid.UUID(challenge), tag)
    assert not auth.verify([], uuid.UUID(challenge), tag)


def test_a_tag_for_another_challenge_is_refused():
    (first, tag), (second, _) = CAPTURED
    assert not auth.verify(["s3cret"], uuid.UUID(second), tag)


@pytest.mark.parametrize("tag", ["", "abc", "é" * 64, "C23CCCB3E72BE1F5FE7E5CBA50E545401924C734FD60CAAD887483035928AA4B"])
def test_malformed_tags_are_refused_without_error(tag):
    assert not auth.verify(["s3cret"], uuid.UUID(CAPTURED[0][0]), tag)
