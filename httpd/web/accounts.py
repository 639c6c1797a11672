"""Web journal accounts: passwords, sessions and the slowdown of failed sign-ins.

Theory of operation
-------------------
A *user* (``web_users``) is a login, the employee it is ("Мои звонки") and an scrypt hash of
its password (:func:`hash_password`: a random 16-byte salt, N=2**14, r=8, p=1, 64 bytes; the
parameters are stored with the hash so they can be raised later). Hashing runs in a worker
thread: it takes tens of milliseconds and 16 MiB by design.

A *session* (``web_sessions``) is a random 32-byte token in an HttpOnly cookie; the database
keeps only its SHA-256, so a copy of the database signs nobody in. Each session has its own
CSRF token that every write must carry. A session lasts :data:`SESSION_SECONDS` after its last
use (extended at most every :data:`SESSION_EXTEND_SECONDS`, so reads do not write) and never
more than :data:`SESSION_MAX_SECONDS`; signing out, a new password or removing the user ends it.

:class:`SignInThrottle` slows guessing down: after :data:`FREE_FAILURES` failures for one login
or from one address, the next attempt must wait 2, 4, 8 ... seconds (at most
:data:`MAX_DELAY`), whether the login exists or not; a success clears the login's count.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from storage.engine import Database
from storage.models import Employee, EmployeeExtension, WebSession, WebUser

__all__ = [
    "Account",
    "Accounts",
    "Session",
    "SignInThrottle",
    "hash_password",
    "verify_password",
]

SESSION_SECONDS = 12 * 3600.0
SESSION_EXTEND_SECONDS = 600.0
SESSION_MAX_SECONDS = 30 * 86400.0

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SCRYPT_LEN = 2**14, 8, 1, 64
_SCRYPT_MEMORY = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` for ``password`` with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, length=_SCRYPT_LEN)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        if scheme != "scrypt":
            return False
        actual = _scrypt(
            password, base64.b64decode(salt), n=int(n), r=int(r), p=int(p), length=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, *, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_SCRYPT_MEMORY
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


#: Verified against when the login does not exist, so that the answer takes as long.
_DUMMY_HASH = hash_password(secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class Account:
    login: str
    employee: str
    admin: bool
    #: The employee's name when the directory knows the id or extension, else None.
    employee_name: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    token: str  # only when just created; "" when read back
    csrf: str
    account: Account
    expires_at: float


class Accounts:
    """Users and sessions in the journal's database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    # users (pbxjournal users ...)

    async def add(self, login: str, employee: str, password: str, *, admin: bool) -> bool:
        """Create ``login``; False when it exists already."""
        hashed = await asyncio.to_thread(hash_password, password)
        now = time.time()
        async with self._database.write_sessions() as session, session.begin():
            if await session.get(WebUser, login) is not None:
                return False
            session.add(
                WebUser(
                    login=login,
                    employee=employee,
                    admin=admin,
                    password_hash=hashed,
                    created_at=now,
                    password_changed_at=now,
                )
            )
        return True

    async def set_password(self, login: str, password: str) -> bool:
        """A new password, every session of ``login`` ended; False when there is no such user."""
        hashed = await asyncio.to_thread(hash_password, password)
        async with self._database.write_sessions() as session, session.begin():
            user = await session.get(WebUser, login)
            if user is None:
                return False
            user.password_hash = hashed
            user.password_changed_at = time.time()
            await session.execute(sa.delete(WebSession).where(WebSession.login == login))
        return True

    async def remove(self, login: str) -> bool:
        async with self._database.write_sessions() as session, session.begin():
            await session.execute(sa.delete(WebSession).where(WebSession.login == login))
            result = await session.execute(sa.delete(WebUser).where(WebUser.login == login))
        return bool(getattr(result, "rowcount", 0))

    async def accounts(self) -> list[Account]:
        async with self._database.sessions() as session:
            users = (await session.scalars(sa.select(WebUser).order_by(WebUser.login))).all()
            return [await self._account(session, user) for user in users]

    async def employee_known(self, employee: str) -> bool:
        async with self._database.sessions() as session:
            return await _employee_name(session, employee) is not None

    # signing in

    async def authenticate(self, login: str, password: str) -> Account | None:
        """The account when ``password`` is ``login``'s; the same work when there is no
        such login."""
        async with self._database.sessions() as session:
            user = await session.get(WebUser, login) if login else None
            stored = user.password_hash if user is not None else _DUMMY_HASH
            ok = await asyncio.to_thread(verify_password, password, stored)
            if user is None or not ok:
                return None
            return await self._account(session, user)

    async def open_session(self, account: Account) -> Session:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        async with self._database.write_sessions() as session, session.begin():
            # Expired sessions go when someone signs in: no timer needed.
            await session.execute(sa.delete(WebSession).where(WebSession.expires_at < now))
            session.add(
                WebSession(
                    token_hash=_token_hash(token),
                    login=account.login,
                    csrf=csrf,
                    created_at=now,
                    expires_at=now + SESSION_SECONDS,
                )
            )
        return Session(token, csrf, account, now + SESSION_SECONDS)

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie's token, extended when due; None otherwise."""
        if not token or len(token) > 200:
            return None
        key = _token_hash(token)
        now = time.time()
        async with self._database.sessions() as session:
            row = await session.get(WebSession, key)
            if row is None or row.expires_at <= now:
                return None
            user = await session.get(WebUser, row.login)
            if user is None:
                return None
            account = await self._account(session, user)
            csrf, expires, created = row.csrf, row.expires_at, row.created_at
        wanted = min(now + SESSION_SECONDS, created + SESSION_MAX_SECONDS)
        if wanted - expires > SESSION_EXTEND_SECONDS:
            async with self._database.write_sessions() as session, session.begin():
                await session.execute(
                    sa.update(WebSession)
                    .where(WebSession.token_hash == key)
                    .values(expires_at=wanted)
                )
            expires = wanted
        return Session("", csrf, account, expires)

    async def close_session(self, token: str) -> None:
        async with self._database.write_sessions() as session, session.begin():
            await session.execute(
                sa.delete(WebSession).where(WebSession.token_hash == _token_hash(token))
            )

    async def _account(self, session: AsyncSession, user: WebUser) -> Account:
        name = await _employee_name(session, user.employee)
        return Account(user.login, user.employee, user.admin, name)


async def _employee_name(session: AsyncSession, employee: str) -> str | None:
    found = await session.get(Employee, employee)
    if found is None:
        extension = await session.get(EmployeeExtension, employee)
        if extension is not None:
            found = await session.get(Employee, extension.employee_id)
    return found.name if found is not None else None


#: Failures allowed before attempts are slowed down, per login and per address.
FREE_FAILURES = 5
MAX_DELAY = 300.0
#: A count is forgotten this long after its last failure.
FORGET_AFTER = 3600.0
_MAX_KEYS = 50_000


class SignInThrottle:
    """Failed sign-ins per key (a login, an address) and when the next attempt may come."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds to wait before an attempt for these keys is looked at (0: go ahead)."""
        longest = 0.0
        for key in keys:
            count, last = self._failures.get(key, (0, 0.0))
            if count >= FREE_FAILURES:
                delay = min(2.0 ** (count - FREE_FAILURES + 1), MAX_DELAY)
                longest = max(longest, last + delay - now)
        return max(0.0, longest)

    def failed(self, keys: list[str], now: float) -> None:
        if len(self._failures) > _MAX_KEYS:
            self._forget(now)
        for key in keys:
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _forget(self, now: float) -> None:
        for key, (_, last) in list(self._failures.items()):
            if now - last > FORGET_AFTER:
                del self._failures[key]
        while len(self._failures) > _MAX_KEYS:  # a flood of fresh keys: drop the oldest
            del self._failures[next(iter(self._failures))]
