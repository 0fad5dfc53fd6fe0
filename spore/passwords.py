"""The status page's password file: scrypt hashes, and a twisted.cred checker that reads them.

A password file holds one ``user:hash`` line per user, where the hash is what
:func:`hash_password` makes (``spore password USER`` prints such a line)::

    # who may read the status page
    alice:scrypt$16384$8$1$<salt>$<key>

Lines starting with ``#`` and blank lines are skipped.  The salt and key are
base64 without padding: neither holds ``:``, so the first ``:`` of a line ends
the user name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex
from dataclasses import dataclass

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from zope.interface import implementer

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32

# Bounds on a stored hash's parameters, so that a stray line cannot make a
# check take a minute or a gigabyte.  hash_password's values sit well inside.
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_KEY_LENGTHS = range(16, 65)

# Checks waiting for the one running, beyond which a login is refused unchecked.
MAX_CHECKS_WAITING = 16


class PasswordFileError(ValueError):
    """A password file that cannot be used, with a message naming the file and line."""


@dataclass(frozen=True)
class _Hash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
    # OpenSSL wants room for both of scrypt's arrays: 128·r·(n + 2) and 128·r·p bytes.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def hash_password(password: str) -> str:
    """A stored form of ``password``: ``scrypt$<n>$<r>$<p>$<salt b64>$<key b64>``."""
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(password, N, R, P, salt, KEY_BYTES)
    return "$".join((SCHEME, str(N), str(R), str(P), _b64encode(salt), _b64encode(key)))


def _parse(stored: object) -> _Hash | None:
    """The parts of a value hash_password made, or None for anything else."""
    if not isinstance(stored, str) or not stored.isascii():
        return None
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    numbers = parts[1:4]
    if not all(s.isdigit() and not s.startswith("0") for s in numbers):
        return None
    n, r, p = (int(s) for s in numbers)
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        return None
    try:
        salt, key = _b64decode(parts[4]), _b64decode(parts[5])
    except (binascii.Error, ValueError):
        return None
    if len(salt) < 8 or len(key) not in _KEY_LENGTHS:
        return None
    return _Hash(n, r, p, salt, key)


def is_password_hash(stored: str) -> bool:
    """Whether ``stored`` has the form hash_password gives (it says nothing of the password)."""
    return _parse(stored) is not None


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False for a malformed ``stored``."""
    parsed = _parse(stored)
    if parsed is None or not isinstance(password, str):
        return False
    try:
        key = _scrypt(password, parsed.n, parsed.r, parsed.p, parsed.salt, len(parsed.key))
    except (UnicodeError, ValueError, MemoryError):
        return False
    return hmac.compare_digest(key, parsed.key)


def read_password_file(path: str) -> dict[bytes, str]:
    """The users of a password file and their hashes; PasswordFileError if it cannot be used."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise PasswordFileError(f"{path}: cannot read the password file: {e.strerror}") from None
    users: dict[bytes, str] = {}
    first_seen: dict[bytes, int] = {}
    for number, raw in enumerate(content.splitlines(), start=1):
        where = f"{path}, line {number}"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise PasswordFileError(f"{where}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        user, colon, stored = line.partition(":")
        user, stored = user.strip(), stored.strip()
        if not colon:
            raise PasswordFileError(f"{where}: expected USER:HASH, but there is no ':'")
        if not user:
            raise PasswordFileError(f"{where}: the user name before ':' is empty")
        if not is_password_hash(stored):
            raise PasswordFileError(
                f"{where}: the hash of user {user!r} is not one spore made"
                f" (make one with: spore password {shlex.quote(user)})"
            )
        name = user.encode("utf-8")
        if name in users:
            raise PasswordFileError(f"{where}: user {user!r} is given twice (first on line {first_seen[name]})")
        users[name] = stored
        first_seen[name] = number
    if not users:
        raise PasswordFileError(f"{path}: the password file has no user (add one with: spore password USER)")
    return users


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """Checks usernames and passwords against a password file, read when made and on ``reload``.

    scrypt takes tens of milliseconds of CPU on purpose.  Given a ``reactor``,
    each check runs in the reactor's thread pool (hashlib releases the GIL), so
    that a stream of wrong guesses does not stall the tunnels served by the
    same reactor; without one, it runs at once.  Checks run one at a time, so
    a flood of guesses takes one core at most, never every core the tunnels
    need, and with ``MAX_CHECKS_WAITING`` waiting for their turn the next
    login is refused unchecked.  A browser sends the password again with every
    request, so a password that passed is remembered (as a keyed digest, with
    a key made for this process) and passes again at once, flood or not.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str, *, reactor=None) -> None:
        self.path = path
        self._users = read_password_file(path)
        self._reactor = reactor
        # An unknown user costs a full check too, so timing does not tell who exists.
        self._dummy = hash_password(_b64encode(os.urandom(SALT_BYTES)))
        self._digest_key = os.urandom(32)
        self._passed: dict[bytes, bytes] = {}
        self._lane = DeferredSemaphore(1)

    def reload(self) -> int:
        """Read the password file again and check against what it says now; returns its number of users.

        A password remembered as passed is forgotten, so a user removed or
        given a new password is refused from now on.  Raises
        ``PasswordFileError``, and keeps the users it had, if the file cannot
        be used.
        """
        self._users = read_password_file(self.path)
        self._passed.clear()
        return len(self._users)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        username, password = credentials.username, credentials.password
        if isinstance(username, str):
            username = username.encode("utf-8")
        if isinstance(password, bytes):
            try:
                password = password.decode("utf-8")
            except UnicodeDecodeError:
                password = None
        stored = self._users.get(username)
        if stored is None or not isinstance(password, str):
            return self._check(password or "", self._dummy).addCallback(lambda _: self._refuse())
        digest = self._digest(password)
        if hmac.compare_digest(self._passed.get(username, b""), digest):
            return succeed(username)

        def checked(ok: bool) -> bytes:
            if not ok:
                self._refuse()
            self._passed[username] = digest
            return username

        return self._check(password, stored).addCallback(checked)

    def _digest(self, password: str) -> bytes:
        return hashlib.blake2b(password.encode("utf-8", "surrogatepass"), key=self._digest_key).digest()

    def _check(self, password: str, stored: str) -> Deferred[bool]:
        if self._reactor is None:
            return maybeDeferred(verify_password, password, stored)
        if len(self._lane.waiting) >= MAX_CHECKS_WAITING:
            return succeed(False)
        pool = self._reactor.getThreadPool()
        return self._lane.run(deferToThreadPool, self._reactor, pool, verify_password, password, stored)

    @staticmethod
    def _refuse() -> bytes:
        raise UnauthorizedLogin()

