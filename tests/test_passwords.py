"""The status page's password file: hashes, the file's rules and their messages, the twisted.cred checker."""

from __future__ import annotations

import functools
import re

import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin

import spore.passwords
from spore.passwords import (
    MAX_CHECKS_WAITING,
    PasswordFileChecker,
    PasswordFileError,
    hash_password,
    is_password_hash,
    read_password_file,
    verify_password,
)

TIMEOUT = 5


@functools.cache
def stored(password: str) -> str:
    """One hash per password for the whole run: each costs tens of milliseconds."""
    return hash_password(password)


def test_a_hash_verifies_its_password_and_no_other():
    hashed = hash_password("correct horse")
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", hashed)
    assert ":" not in hashed and is_password_hash(hashed)
    assert verify_password("correct horse", hashed)
    assert not verify_password("correct horse ", hashed)
    assert not verify_password("Correct horse", hashed)
    assert not verify_password("", hashed)
    assert hash_password("correct horse") != hashed  # salted


def test_any_text_can_be_a_password():
    for password in ("", "pässwörd 🔑", "a:b$c", "x" * 1000):
        assert verify_password(password, hash_password(password))
    assert not verify_password("\ud800", stored("x"))  # a lone surrogate has no UTF-8


def test_padded_base64_verifies_too():
    scheme, n, r, p, salt, key = stored("padded").split("$")
    padded = "$".join((scheme, n, r, p, salt + "=" * (-len(salt) % 4), key + "=" * (-len(key) % 4)))
    assert padded != stored("padded") and verify_password("padded", padded)


def _replace(part: int, value: str) -> str:
    parts = stored("s").split("$")
    parts[part] = value
    return "$".join(parts)


@pytest.mark.parametrize(
    "value",
    [
        "", "s", "scrypt", "scrypt$", "scrypt$$$$$", "plain text", "$2b$12$abcdefghijklmnopqrstuv",
        _replace(0, "bcrypt"), _replace(0, "SCRYPT"), _replace(1, "1000"), _replace(1, "1"), _replace(1, "0"),
        _replace(1, "016384"), _replace(1, str(2**30)), _replace(1, "-16384"), _replace(1, "n"),
        _replace(2, "0"), _replace(2, "1000"), _replace(3, "0"), _replace(3, "99"),
        _replace(4, "!!!!"), _replace(4, "c2FsdA"), _replace(5, "a2V5"), _replace(5, "A" * 200),
        _replace(5, "not base64 at all"), stored("s") + "$extra", stored("s")[:-1] + "é", stored("s") + "\n",
    ],
)
def test_a_malformed_stored_value_never_verifies_and_never_raises(value):
    assert not is_password_hash(value)
    assert verify_password("s", value) is False


def test_verify_takes_only_text():
    assert verify_password("s", None) is False  # type: ignore[arg-type]
    assert verify_password(b"s", stored("s")) is False  # type: ignore[arg-type]


def test_a_password_file_lists_users_and_their_hashes(tmp_path):
    path = tmp_path / "passwords"
    path.write_bytes(
        (
            "# the status page's users\n"
            "\n"
            f"alice:{stored('a')}\r\n"
            f"  bob : {stored('b')}  \n"
            "   # indented comment\n"
            f"zoë:{stored('z')}"
        ).encode()
    )
    assert read_password_file(str(path)) == {b"alice": stored("a"), b"bob": stored("b"), "zoë".encode(): stored("z")}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "{path}: the password file has no user (add one with: spore password USER)"),
        (b"# only comments\n\n   \n", "{path}: the password file has no user"),
        (b"# fine\n\xff\xfe:oops\n", "{path}, line 2: not UTF-8"),
        (b"alice\n", "{path}, line 1: expected USER:HASH, but there is no ':'"),
        (b"# x\n:" + stored("a").encode(), "{path}, line 2: the user name before ':' is empty"),
        (b"alice:open sesame\n",
         "{path}, line 1: the hash of user 'alice' is not one spore made (make one with: spore password alice)"),
        (b"o'brien:$apr1$xyz\n", "(make one with: spore password 'o'\"'\"'brien')"),
        (b"alice:\n", "{path}, line 1: the hash of user 'alice' is not one spore made"),
        (f"alice:{stored('a')}\nbob:{stored('b')}\nalice:{stored('c')}\n".encode(),
         "{path}, line 3: user 'alice' is given twice (first on line 1)"),
    ],
)
def test_each_fault_of_a_password_file_is_named_with_its_line(tmp_path, content, message):
    path = tmp_path / "passwords"
    path.write_bytes(content)
    with pytest.raises(PasswordFileError) as raised:
        read_password_file(str(path))
    assert message.format(path=path) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_an_unreadable_password_file_says_why(tmp_path):
    missing = tmp_path / "missing"
    for path, why in ((missing, "No such file or directory"), (tmp_path, "Is a directory")):
        with pytest.raises(PasswordFileError) as raised:
            read_password_file(str(path))
        assert str(raised.value) == f"{path}: cannot read the password file: {why}"


@pytest.fixture
def password_file(tmp_path) -> str:
    path = tmp_path / "passwords"
    path.write_text(f"alice:{stored('open sesame')}\nbob:{stored('hunter2')}\n")
    return str(path)


def outcome(deferred) -> bytes | type[Exception]:
    """What an already fired Deferred holds: the avatar id, or the class of its failure."""
    results = []
    deferred.addBoth(results.append)
    (result,) = results
    if isinstance(result, bytes):
        return result
    return result.type


def test_the_checker_lets_in_users_with_their_passwords(password_file):
    checker = PasswordFileChecker(password_file)
    check = checker.requestAvatarId
    assert outcome(check(UsernamePassword(b"alice", b"open sesame"))) == b"alice"
    assert outcome(check(UsernamePassword(b"bob", b"hunter2"))) == b"bob"
    assert outcome(check(UsernamePassword(b"alice", b"open sesame"))) == b"alice"  # again, remembered
    assert outcome(check(UsernamePassword(b"alice", b"hunter2"))) is UnauthorizedLogin
    assert outcome(check(UsernamePassword(b"bob", b"open sesame"))) is UnauthorizedLogin
    assert outcome(check(UsernamePassword(b"alice", b""))) is UnauthorizedLogin
    assert outcome(check(UsernamePassword(b"carol", b"open sesame"))) is UnauthorizedLogin
    assert outcome(check(UsernamePassword(b"alice", b"\xff"))) is UnauthorizedLogin
    assert outcome(check(UsernamePassword(b"ALICE", b"open sesame"))) is UnauthorizedLogin


def test_an_unknown_user_costs_a_check_as_a_known_one_does(password_file, monkeypatch):
    checker = PasswordFileChecker(password_file)
    checked = []
    real = spore.passwords.verify_password

    def counting(password, stored):
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(spore.passwords, "verify_password", counting)
    for username, password in ((b"carol", b"x"), (b"alice", b"x"), (b"", b""), (b"dave", b"\xff")):
        assert outcome(checker.requestAvatarId(UsernamePassword(username, password))) is UnauthorizedLogin
    assert len(checked) == 4 and all(is_password_hash(s) for s in checked)


def test_the_checker_reads_its_file_when_made_and_when_reloaded(tmp_path):
    path = tmp_path / "passwords"
    path.write_text("alice:plain\n")
    with pytest.raises(PasswordFileError, match="line 1"):
        PasswordFileChecker(str(path))
    path.write_text(f"alice:{stored('a')}\nbob:{stored('b')}\n")
    checker = PasswordFileChecker(str(path))
    check = checker.requestAvatarId
    assert outcome(check(UsernamePassword(b"alice", b"a"))) == b"alice"  # and now remembered
    path.write_text(f"alice:{stored('new')}\ncarol:{stored('c')}\n")
    assert outcome(check(UsernamePassword(b"bob", b"b"))) == b"bob"  # until it is reloaded
    assert checker.reload() == 2
    assert outcome(check(UsernamePassword(b"alice", b"a"))) is UnauthorizedLogin  # remembered no longer
    assert outcome(check(UsernamePassword(b"bob", b"b"))) is UnauthorizedLogin  # removed
    assert outcome(check(UsernamePassword(b"alice", b"new"))) == b"alice"
    assert outcome(check(UsernamePassword(b"carol", b"c"))) == b"carol"


def test_a_password_file_broken_since_keeps_its_users(tmp_path):
    path = tmp_path / "passwords"
    path.write_text(f"alice:{stored('a')}\n")
    checker = PasswordFileChecker(str(path))
    path.write_text(f"alice:{stored('a')}\nbob:plain\n")
    with pytest.raises(PasswordFileError, match="line 2"):
        checker.reload()
    assert outcome(checker.requestAvatarId(UsernamePassword(b"alice", b"a"))) == b"alice"
    path.unlink()
    with pytest.raises(PasswordFileError):
        checker.reload()
    assert outcome(checker.requestAvatarId(UsernamePassword(b"alice", b"a"))) == b"alice"


@pytest_twisted.ensureDeferred
async def test_the_checker_can_check_in_the_reactors_thread_pool(reactor, password_file):
    checker = PasswordFileChecker(password_file, reactor=reactor)
    right = checker.requestAvatarId(UsernamePassword(b"alice", b"open sesame"))
    assert await right.addTimeout(TIMEOUT, reactor) == b"alice"
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(UsernamePassword(b"alice", b"wrong")).addTimeout(TIMEOUT, reactor)
    with pytest.raises(UnauthorizedLogin):
        await checker.requestAvatarId(UsernamePassword(b"nobody", b"wrong")).addTimeout(TIMEOUT, reactor)


class HeldPool:
    """A thread pool that runs each call only when told to."""

    def __init__(self) -> None:
        self.calls = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs) -> None:
        self.calls.append((on_result, f, args, kwargs))

    def finish_all(self) -> None:
        while self.calls:
            on_result, f, args, kwargs = self.calls.pop(0)
            on_result(True, f(*args, **kwargs))


class PoolReactor:
    def __init__(self) -> None:
        self.pool = HeldPool()

    def getThreadPool(self) -> HeldPool:
        return self.pool

    def callFromThread(self, f, *args, **kwargs) -> None:
        f(*args, **kwargs)


def test_checks_run_one_at_a_time_and_a_flood_of_them_is_refused_unchecked(password_file):
    reactor = PoolReactor()
    checker = PasswordFileChecker(password_file, reactor=reactor)
    check = checker.requestAvatarId
    guesses = [check(UsernamePassword(b"alice", b"guess %d" % i)) for i in range(1 + MAX_CHECKS_WAITING)]
    assert len(reactor.pool.calls) == 1  # one running, the rest waiting their turn
    refused = check(UsernamePassword(b"alice", b"open sesame"))
    assert outcome(refused) is UnauthorizedLogin and len(reactor.pool.calls) == 1  # never checked
    reactor.pool.finish_all()
    assert [outcome(guess) for guess in guesses] == [UnauthorizedLogin] * len(guesses)

    right = check(UsernamePassword(b"alice", b"open sesame"))
    reactor.pool.finish_all()
    assert outcome(right) == b"alice"
    flood = [check(UsernamePassword(b"bob", b"guess %d" % i)) for i in range(1 + MAX_CHECKS_WAITING)]
    assert outcome(check(UsernamePassword(b"alice", b"open sesame"))) == b"alice"  # remembered: passes in a flood
    reactor.pool.finish_all()
    assert [outcome(guess) for guess in flood] == [UnauthorizedLogin] * len(flood)
