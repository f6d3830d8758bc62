"""SQLAlchemy 2.x as an application uses it (ORM session, default transactional
behaviour, autobegin, RETURNING, IntegrityError, with_for_update), sync over
pymysql and async over aiomysql: everything the app sees must be identical
direct and through thaw.

The corpus tests (test_corpus.py) run SQLAlchemy Core text() in AUTOCOMMIT mode;
these run SQLAlchemy's own transactions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import uuid
from decimal import Decimal

from sqlalchemy import (JSON, BigInteger, DateTime, Enum, Float, ForeignKey, LargeBinary, Numeric,
                        String, Time, create_engine, func, insert, select, text, update)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import NullPool
from sqlalchemy.types import Uuid

from conftest import admin_exec

from .harness import StepFailed, err_info, render, typed


class Kind(enum.Enum):
    basic = "basic"
    gold = "gold"


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    balance: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    frozen: Mapped[Decimal] = mapped_column(Numeric(12, 2), default=Decimal("0"))
    ratio: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict | None] = mapped_column(JSON)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    kind: Mapped[Kind] = mapped_column(Enum(Kind), default=Kind.basic)
    uid: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created: Mapped[dt.datetime | None] = mapped_column(DateTime)
    at: Mapped[dt.time | None] = mapped_column(Time)
    logs: Mapped[list["Log"]] = relationship(back_populates="account", order_by="Log.id")


class Log(Base):
    __tablename__ = "logs"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    note: Mapped[str] = mapped_column(String(100))
    account: Mapped[Account] = relationship(back_populates="logs")


SEED = [
    dict(name="alice", balance=Decimal("100.50"), ratio=0.1, data={"tier": 1, "tags": ["ü", "😀"]},
         raw=b"\x00\xff\x80\xfe", kind=Kind.gold, uid=uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
         created=dt.datetime(2024, 2, 29, 12, 34, 56), at=dt.time(23, 59, 59)),
    dict(name="bob 😀", balance=Decimal("0.01"), ratio=None, data=None, raw=None, kind=Kind.basic, uid=None,
         created=None, at=None),
    dict(name="carol", balance=Decimal("9999999999.99"), ratio=-1.5e30, data=[1, 2.5, None], raw=b"",
         kind=Kind.basic, uid=uuid.UUID(int=0), created=dt.datetime(1000, 1, 1), at=dt.time(0, 0)),
]


def _acct(a: Account):
    return typed((a.id, a.name, a.balance, a.frozen, a.ratio, a.data, a.raw, a.kind.value, a.uid,
                  a.created, a.at))


def orm_flow_sync(url: str) -> list:
    obs = []
    engine = create_engine(url, poolclass=NullPool)

    def step(name, fn):
        try:
            obs.append((name, fn()))
        except DBAPIError as e:
            obs.append((name, {"error": err_info(e)}))

    try:
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            accts = [Account(**row) for row in SEED]
            s.add_all(accts)
            step("flush ids", lambda: (s.flush(), [a.id for a in accts])[1])
            s.add(Log(account=accts[0], amount=Decimal("1.25"), note="first"))
            s.commit()
            step("select all", lambda: [_acct(a) for a in s.scalars(select(Account).order_by(Account.id))])
            # the legacy app's pattern: locking read, absolute write, commit
            def freeze():
                a = s.scalars(select(Account).where(Account.id == 1).with_for_update()).one()
                a.frozen = a.frozen + Decimal("40.25")
                s.add(Log(account_id=a.id, amount=Decimal("40.25"), note="freeze"))
                s.commit()
                return _acct(a)
            step("freeze with FOR UPDATE", freeze)
            def dup():
                s.add(Account(name="alice"))
                try:
                    s.commit()
                except DBAPIError:
                    s.rollback()
                    raise
            step("duplicate name -> IntegrityError", dup)
            step("after rollback", lambda: s.scalar(select(func.count()).select_from(Account)))
            def rowcount():
                r = s.execute(update(Account).where(Account.balance < 1000).values(ratio=0.5))
                s.commit()
                return r.rowcount
            step("update rowcount", rowcount)
            step("insert returning", lambda: typed(s.execute(
                insert(Account).returning(Account.id, Account.name, Account.balance),
                [{"name": "dave", "balance": Decimal("5")}, {"name": "eve", "balance": Decimal("6")}]).all()))
            s.commit()
            step("relationship load", lambda: [(l.note, typed(l.amount), l.account.name)
                                               for l in s.scalars(select(Log).order_by(Log.id))])
            step("aggregates", lambda: typed(s.execute(select(
                func.count(Account.id), func.sum(Account.balance), func.max(Account.created),
                func.avg(Account.ratio))).one()))
            step("text with params", lambda: typed(s.execute(
                text("SELECT name, balance FROM accounts WHERE balance > :b ORDER BY id"),
                {"b": Decimal("1")}).all()))
            step("server error", lambda: s.execute(text("SELECT * FROM no_such_table")))
            s.rollback()
            step("in_transaction after rollback", lambda: s.in_transaction())
    finally:
        engine.dispose()
    return obs


async def orm_flow_async(url: str) -> list:
    obs = []
    engine = create_async_engine(url, poolclass=NullPool)

    async def step(name, coro_fn):
        try:
            obs.append((name, await coro_fn()))
        except DBAPIError as e:
            obs.append((name, {"error": err_info(e)}))

    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine, expire_on_commit=False) as s:
            accts = [Account(**row) for row in SEED]
            s.add_all(accts)
            await s.commit()
            obs.append(("ids", [a.id for a in accts]))

            async def all_():
                return [_acct(a) for a in (await s.scalars(select(Account).order_by(Account.id))).all()]
            await step("select all", all_)

            async def freeze():
                # the legacy billing app's exact shape: FOR UPDATE, absolute UPDATE, RETURNING insert
                a = (await s.scalars(select(Account).where(Account.name == "alice").with_for_update())).one()
                new = a.frozen + Decimal("616")
                r = await s.execute(insert(Log).returning(Log.id), [{"account_id": a.id, "amount": Decimal("616"),
                                                                      "note": "freeze"}])
                log_ids = r.scalars().all()
                await s.execute(update(Account).where(Account.id == a.id).values(frozen=new))
                await s.commit()
                return typed((log_ids, new))
            await step("freeze", freeze)

            async def dup():
                s.add(Account(name="alice"))
                try:
                    await s.commit()
                except DBAPIError:
                    await s.rollback()
                    raise
            await step("duplicate -> IntegrityError", dup)

            async def count():
                return await s.scalar(select(func.count()).select_from(Account))
            await step("count", count)

            async def rowcount():
                r = await s.execute(update(Account).where(Account.balance > 50).values(ratio=2.0))
                await s.commit()
                return r.rowcount
            await step("update rowcount", rowcount)

            async def err():
                return await s.execute(text("SELEC 1"))
            await step("syntax error", err)
            await s.rollback()
    finally:
        await engine.dispose()
    return obs


def _compare(name, direct, thawed):
    if direct != thawed:
        import difflib
        diff = "\n".join(difflib.unified_diff(render(direct), render(thawed), "direct", "thaw", lineterm=""))
        raise StepFailed(f"{name}: direct and thaw differ\n{diff}")


def _fresh(db):
    admin_exec(f"DROP DATABASE IF EXISTS `{db}`", f"CREATE DATABASE `{db}`")


def test_orm_sync_pymysql(db_name, direct_addr, thaw_addr):
    runs = []
    for host, port in (direct_addr, thaw_addr):
        _fresh(db_name)
        runs.append(orm_flow_sync(f"mysql+pymysql://root@{host}:{port}/{db_name}?charset=utf8mb4"))
    errors = [o for _, o in runs[0] if isinstance(o, dict) and "error" in o]
    assert len(errors) == 2, runs[0]  # the duplicate and the unknown table
    _compare("SQLAlchemy ORM (sync, pymysql)", runs[0], runs[1])


def test_orm_async_aiomysql(db_name, direct_addr, thaw_addr):
    runs = []
    for host, port in (direct_addr, thaw_addr):
        _fresh(db_name)
        runs.append(asyncio.run(orm_flow_async(f"mysql+aiomysql://root@{host}:{port}/{db_name}?charset=utf8mb4")))
    errors = [o for _, o in runs[0] if isinstance(o, dict) and "error" in o]
    assert len(errors) == 2, runs[0]
    _compare("SQLAlchemy ORM (async, aiomysql)", runs[0], runs[1])
