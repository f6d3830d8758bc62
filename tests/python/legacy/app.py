"""Replica of the legacy billing app that thaw sits in front of.

SQLAlchemy 2 async ORM over aiomysql, written the way the legacy code is
written: pessimistic ``with_for_update()`` reads, checks in Python, absolute
ORM attribute writes, implicit transactions (the driver runs with
``autocommit=0``).  Point it at MariaDB directly or at thaw: only the
host/port of the DSN change.

The SQL it sends matches ``shared/reference/legacy-app-trace.sql``: multi-line
SELECTs, ``INSERT ... RETURNING`` of the freeze log *before* the absolute
``UPDATE users SET frozen_balance=<n>, updated_at=now()`` (the unit of work
flushes mappers sorted by class name: ComputeFreezeLog < User).

The only thaw-specific code is ``_map_db_error``: thaw answers a guarded write
that would break an invariant with MySQL error 1644 (SQLSTATE 45000,
"insufficient balance"), which the app reports as ``InsufficientBalance``
just like its own Python check.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, Numeric, String, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

# The error thaw returns for an invariant violation (rules/billing.yaml).
THAW_VIOLATION_CODE = 1644
THAW_VIOLATION_SQLSTATE = "45000"
LOCK_WAIT_TIMEOUT = 1205
LOCK_NOWAIT = 3572
DEADLOCK = 1213

SCHEMA_INT = [
    """CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
  balance BIGINT NOT NULL DEFAULT 0, frozen_balance BIGINT NOT NULL DEFAULT 0,
  updated_at DATETIME NULL)""",
    """CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
  request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
  amount BIGINT NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME
  DEFAULT CURRENT_TIMESTAMP)""",
    """CREATE TABLE conversations (id BIGINT PRIMARY KEY, message_count INT NOT NULL
  DEFAULT 0, total_tokens BIGINT NOT NULL DEFAULT 0)""",
]

# Same table names, DECIMAL(18,2) money columns (lives in its own database).
SCHEMA_DECIMAL = [
    """CREATE TABLE users (id BIGINT PRIMARY KEY, username VARCHAR(64),
  balance DECIMAL(18,2) NOT NULL DEFAULT 0, frozen_balance DECIMAL(18,2) NOT NULL DEFAULT 0,
  updated_at DATETIME NULL)""",
    """CREATE TABLE compute_freeze_logs (id BIGINT PRIMARY KEY AUTO_INCREMENT,
  request_id VARCHAR(64) NOT NULL UNIQUE, user_id BIGINT NOT NULL,
  amount DECIMAL(18,2) NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME
  DEFAULT CURRENT_TIMESTAMP)""",
    SCHEMA_INT[2],
]


def schema(decimal: bool = False) -> list[str]:
    return SCHEMA_DECIMAL if decimal else SCHEMA_INT


# --------------------------------------------------------------------------
# errors


class InsufficientBalance(Exception):
    """The user cannot afford the freeze.

    ``source`` is "app" when the legacy Python check refused it, "db" when
    the database side (thaw's guard) refused the write; ``db_message`` holds
    the server's message in the latter case.
    """

    def __init__(self, user_id: int, amount: Any, source: str = "app", db_message: str | None = None):
        self.user_id = user_id
        self.amount = amount
        self.source = source
        self.db_message = db_message
        msg = f"insufficient balance: user {user_id} amount {amount}"
        if db_message:
            msg += f" ({db_message})"
        super().__init__(msg)


class NotFrozen(Exception):
    """settle/refund of a request that is not (or no longer) frozen."""


def db_error_code(exc: BaseException) -> int | None:
    """MySQL error code of a (wrapped) DBAPI error, else None."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def db_error_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    if len(args) >= 2:
        return str(args[1])
    return str(orig)


@contextlib.contextmanager
def _map_db_error(user_id: int, amount: Any):
    """The app maps the DBAPI error by code: 1644 -> InsufficientBalance."""
    try:
        yield
    except DBAPIError as e:
        if db_error_code(e) == THAW_VIOLATION_CODE:
            raise InsufficientBalance(user_id, amount, source="db", db_message=db_error_message(e)) from e
        raise


# --------------------------------------------------------------------------
# models


def make_models(decimal: bool = False):
    """ORM classes for the BIGINT schema or the DECIMAL(18,2) variant.

    Each call builds a fresh declarative base so both variants can be used in
    one process (same table names, different databases).
    """
    Money = Numeric(18, 2, asdecimal=True) if decimal else BigInteger

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
        username: Mapped[str | None] = mapped_column(String(64))
        balance: Mapped[Any] = mapped_column(Money, nullable=False, default=0)
        frozen_balance: Mapped[Any] = mapped_column(Money, nullable=False, default=0)
        updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    class ComputeFreezeLog(Base):
        __tablename__ = "compute_freeze_logs"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
        request_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
        user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
        amount: Mapped[Any] = mapped_column(Money, nullable=False)
        status: Mapped[str] = mapped_column(String(16), nullable=False)
        created_at: Mapped[dt.datetime | None] = mapped_column(DateTime, server_default=func.now())

    class Conversation(Base):
        __tablename__ = "conversations"
        id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
        message_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
        total_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)

    return Base, User, ComputeFreezeLog, Conversation


# --------------------------------------------------------------------------
# engine


def dsn(host: str, port: int, database: str, user: str = "root", password: str = "") -> str:
    return f"mysql+aiomysql://{user}:{password}@{host}:{port}/{database}?charset=utf8mb4"


def make_engine(
    host: str,
    port: int,
    database: str,
    *,
    user: str = "root",
    password: str = "",
    pool_size: int | None = 110,
    echo: bool = False,
    connect_timeout: int = 10,
) -> AsyncEngine:
    """Engine as the legacy app configures it; ``pool_size=None`` -> NullPool.

    The pool must be at least as large as the concurrency under test, or the
    pool queue (not the row lock) serializes the requests.
    """
    kw: dict[str, Any] = dict(echo=echo, connect_args={"connect_timeout": connect_timeout})
    if pool_size is None:
        kw["poolclass"] = NullPool
    else:
        kw.update(pool_size=pool_size, max_overflow=0, pool_timeout=60)
    return create_async_engine(dsn(host, port, database, user, password), **kw)


@dataclass
class FreezeResult:
    request_id: str
    log_id: int
    frozen_balance: Any


class LegacyBillingApp:
    """The billing flows, exactly as the legacy code writes them."""

    def __init__(self, engine: AsyncEngine, *, decimal: bool = False):
        self.engine = engine
        self.decimal = decimal
        self.Base, self.User, self.ComputeFreezeLog, self.Conversation = make_models(decimal)
        self.Session = async_sessionmaker(engine, expire_on_commit=False)

    def money(self, v: Any) -> Any:
        return Decimal(str(v)) if self.decimal else int(v)

    async def dispose(self) -> None:
        await self.engine.dispose()

    # -- check_balance + freeze, one session (the common flow) -------------

    async def check_and_freeze(self, user_id: int, amount: Any, request_id: str, work_ms: float = 50) -> FreezeResult:
        User, Log = self.User, self.ComputeFreezeLog
        amount = self.money(amount)
        with _map_db_error(user_id, amount):
            async with self.Session() as session:
                # check_balance: lock the row until commit
                user = (
                    await session.execute(select(User).where(User.id == user_id).with_for_update())
                ).scalar_one()
                if user.balance - user.frozen_balance < amount:
                    raise InsufficientBalance(user_id, amount)
                # other work of the request, lock still held
                await asyncio.sleep(work_ms / 1000.0)
                # freeze: absolute ORM writes
                user.frozen_balance += amount
                user.updated_at = func.now()
                log = Log(request_id=request_id, user_id=user_id, amount=amount, status="frozen")
                session.add(log)
                await session.commit()
                return FreezeResult(request_id, log.id, user.frozen_balance)

    # -- the half-migrated two-session variant -----------------------------

    async def check_and_freeze_two_session(
        self, user_id: int, amount: Any, request_id: str, work_ms: float = 50
    ) -> FreezeResult:
        """check_balance still runs in its own session and holds its lock;
        the freeze was moved to a second session that tries not to wait
        (SKIP LOCKED, then a plain read) and then writes.  Directly against
        MySQL the second session's UPDATE waits on the first session's lock:
        it waits on itself and always ends in 1205."""
        User, Log = self.User, self.ComputeFreezeLog
        amount = self.money(amount)
        with _map_db_error(user_id, amount):
            async with self.Session() as check_session:
                user = (
                    await check_session.execute(select(User).where(User.id == user_id).with_for_update())
                ).scalar_one()
                if user.balance - user.frozen_balance < amount:
                    await check_session.rollback()
                    raise InsufficientBalance(user_id, amount)
                await asyncio.sleep(work_ms / 1000.0)
                try:
                    async with self.Session() as freeze_session:
                        row = (
                            await freeze_session.execute(
                                select(User).where(User.id == user_id).with_for_update(skip_locked=True)
                            )
                        ).scalar_one_or_none()
                        if row is None:
                            # "someone" holds the lock: read without it
                            row = (await freeze_session.execute(select(User).where(User.id == user_id))).scalar_one()
                        log = Log(request_id=request_id, user_id=user_id, amount=amount, status="frozen")
                        freeze_session.add(log)
                        row.frozen_balance += amount
                        row.updated_at = func.now()
                        await freeze_session.commit()
                        return FreezeResult(request_id, log.id, row.frozen_balance)
                finally:
                    await check_session.rollback()

    # -- settle / refund ---------------------------------------------------

    async def settle(self, request_id: str, actual: Any) -> None:
        """Charge ``actual`` (<= the frozen amount) and release the freeze.

        Legacy lock order: the log row first, then the user row -- the reverse
        of check_and_freeze (user row, then the log INSERT).  Directly against
        MariaDB a settle holding the log's next-key lock and a freeze holding
        the user row while inserting into that gap deadlock (1213)."""
        User, Log = self.User, self.ComputeFreezeLog
        actual = self.money(actual)
        async with self.Session() as session:
            log = (
                await session.execute(select(Log).where(Log.request_id == request_id).with_for_update())
            ).scalar_one()
            if log.status != "frozen":
                raise NotFrozen(request_id)
            with _map_db_error(log.user_id, actual):
                user = (
                    await session.execute(select(User).where(User.id == log.user_id).with_for_update())
                ).scalar_one()
                user.balance -= actual
                user.frozen_balance -= log.amount
                user.updated_at = func.now()
                log.status = "settled"
                await session.commit()

    async def refund(self, request_id: str) -> None:
        """Release the freeze without charging (same lock order as settle)."""
        User, Log = self.User, self.ComputeFreezeLog
        async with self.Session() as session:
            log = (
                await session.execute(select(Log).where(Log.request_id == request_id).with_for_update())
            ).scalar_one()
            if log.status != "frozen":
                raise NotFrozen(request_id)
            with _map_db_error(log.user_id, log.amount):
                user = (
                    await session.execute(select(User).where(User.id == log.user_id).with_for_update())
                ).scalar_one()
                user.frozen_balance -= log.amount
                user.updated_at = func.now()
                log.status = "refunded"
                await session.commit()

    # -- conversation stats -----------------------------------------------

    async def record_message(self, conversation_id: int, tokens: int) -> None:
        """Bump the conversation counters: NOWAIT lock, absolute writes."""
        Conversation = self.Conversation
        async with self.Session() as session:
            conv = (
                await session.execute(
                    select(Conversation).where(Conversation.id == conversation_id).with_for_update(nowait=True)
                )
            ).scalar_one()
            conv.message_count = conv.message_count + 1
            conv.total_tokens = conv.total_tokens + tokens
            await session.commit()

    # -- reads ---------------------------------------------------------------

    async def get_user(self, user_id: int):
        async with self.Session() as session:
            return (await session.execute(select(self.User).where(self.User.id == user_id))).scalar_one()
