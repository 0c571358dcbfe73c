"""Persistence: SQLAlchemy tables, the engine and Alembic migrations."""

from pam_unified_mfa.store.database import Store

__all__ = ["Store"]
