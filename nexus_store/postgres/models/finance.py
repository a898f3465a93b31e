"""Finance: accounts, transactions (NUMERIC, never float), budgets and their alerts."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from nexus_store.postgres.models.base import Entity, SoftDeletable, choice, non_negative, positive

__all__ = ["Budget", "BudgetAlert", "FinancialAccount", "Transaction"]

_CURRENCY = "currency ~ '^[A-Z]{3}$'"


class FinancialAccount(SoftDeletable, Entity):
    """A ledger account of an organization."""

    __tablename__ = "financial_accounts"

    # Money is never deleted along with its owner: delete or move the accounts first.
    # Indexed by uq_financial_accounts_organization_id_name (leading column).
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT")
    )
    name: Mapped[str] = mapped_column(String(200))
    account_type: Mapped[str] = choice(
        "checking", "savings", "credit", "cash", "investment", default="checking"
    )
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    balance: Mapped[Decimal] = mapped_column(
        Numeric(15, 2), default=Decimal("0.00"), server_default=text("0")
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default=text("true"))

    __table_args__ = (
        CheckConstraint(_CURRENCY, name="currency_code", info={"field": "currency"}),
        UniqueConstraint("organization_id", "name"),
    )


class Transaction(Entity):
    """A movement of money on an account. ``amount`` is positive; ``kind`` gives the sign."""

    __tablename__ = "transactions"

    # Ledger rows pin their account: it cannot be hard-deleted while they exist.
    # Indexed by ix_transactions_account_id_occurred_at (leading column).
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("financial_accounts.id", ondelete="RESTRICT")
    )
    kind: Mapped[str] = choice("debit", "credit")
    status: Mapped[str] = choice("pending", "posted", "void", default="posted")
    amount: Mapped[Decimal] = positive(Numeric(15, 2))
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    description: Mapped[str | None] = mapped_column(String(500))
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    occurred_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    # The caller's idempotency key: retrying a post cannot double-book.
    reference: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        CheckConstraint(_CURRENCY, name="currency_code", info={"field": "currency"}),
        UniqueConstraint("account_id", "reference"),
        Index("ix_transactions_account_id_occurred_at", "account_id", "occurred_at"),
    )


class Budget(SoftDeletable, Entity):
    """A spending limit for an organization (optionally one project) over a period."""

    __tablename__ = "budgets"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = positive(Numeric(15, 2))
    currency: Mapped[str] = mapped_column(String(3), default="USD", server_default="USD")
    period_start: Mapped[date]
    period_end: Mapped[date]
    alert_threshold_percent: Mapped[Decimal] = non_negative(
        Numeric(5, 2), default=Decimal("80.00"), server_default=text("80")
    )

    __table_args__ = (
        CheckConstraint("period_end >= period_start", name="period", info={"field": "period_end"}),
        CheckConstraint(_CURRENCY, name="currency_code", info={"field": "currency"}),
    )


class BudgetAlert(Entity):
    """Raised when spending crosses a budget's threshold or the budget itself."""

    __tablename__ = "budget_alerts"

    budget_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("budgets.id", ondelete="CASCADE"), index=True
    )
    level: Mapped[str] = choice("warning", "exceeded")
    threshold_percent: Mapped[Decimal] = non_negative(Numeric(5, 2))
    spent: Mapped[Decimal] = non_negative(Numeric(15, 2))
    triggered_at: Mapped[datetime] = mapped_column(server_default=text("now()"))
    acknowledged_at: Mapped[datetime | None]
