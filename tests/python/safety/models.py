"""SQLAlchemy 2.x ORM models of the safety suite's standard schema (harness.STD_SCHEMA)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, DateTime, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str | None] = mapped_column(String(64))
    balance: Mapped[int] = mapped_column(BigInteger)
    frozen_balance: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class FreezeLog(Base):
    __tablename__ = "freeze_logs"
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)


class DecBase(DeclarativeBase):
    pass


class DecUser(DecBase):
    """users with DECIMAL(18,2) money columns."""
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str | None] = mapped_column(String(64))
    balance: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    frozen_balance: Mapped[Decimal] = mapped_column(Numeric(18, 2))
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
