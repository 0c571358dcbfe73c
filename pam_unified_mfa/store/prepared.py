"""Statements compiled once per SQL dialect and run on the DBAPI cursor of a session's connection.

Every login runs a dozen small statements whose database work is a few microseconds each, while
SQLAlchemy's execution layer (execution context, result object, ORM loading) costs five to ten
times that around each of them; on the PAM daemon that was most of a login's CPU time. The
statements of the login path are therefore written with SQLAlchemy as usual, compiled for the
store's dialect on first use, and then executed by the DBAPI cursor of the same connection, in
the session's transaction, with rows read as named tuples. Everything else keeps the ORM.

What SQLAlchemy would do around a failed statement is kept: pending ORM changes are flushed
first (autoflush), a DBAPI error is raised as SQLAlchemy's exception of the same class (so the
store's transaction maps a lost database to `StoreUnavailable`), and a lost connection is
invalidated so the pool does not hand it out again. Parameters never appear in the error text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from pam_unified_mfa.store.database import CONNECTION, nul_free, sqlite_first_change

RowT = TypeVar("RowT")


class _Compiled:
    __slots__ = ("changes_sqlite", "defaults", "nul_free", "order", "sql")

    def __init__(self, statement: Executable, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.defaults: dict[str, Any] = dict(compiled.params)  # literal values in the statement
        order = compiled.positiontup
        self.order: tuple[str, ...] | None = tuple(order) if order is not None else None
        self.nul_free = dialect.name == "postgresql"  # as the store's engine does (database.py)
        self.changes_sqlite: bool = dialect.name == "sqlite" and statement.is_dml

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        values = {**self.defaults, **given} if self.defaults else given
        if self.nul_free:
            values = nul_free(values)
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)


class Prepared:
    """One statement that returns no rows (an INSERT, UPDATE or DELETE)."""

    __slots__ = ("_by_dialect", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def _cursor(self, session: Session, given: Mapping[str, Any]) -> Any:
        session.flush()  # autoflush (nothing to do, and cheap, when nothing is pending)
        connection: Connection = session.info[CONNECTION]  # every store session has one
        dialect = connection.dialect
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            compiled = self._by_dialect[dialect.name] = _Compiled(self.statement, dialect)
        dbapi_connection = connection.connection.driver_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            if compiled.changes_sqlite and not dbapi_connection.in_transaction:
                sqlite_first_change(dbapi_connection, cursor, compiled.sql,
                                    compiled.parameters(given))
            else:
                cursor.execute(compiled.sql, compiled.parameters(given))
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(compiled.sql, None, exc, dialect.loaded_dbapi.Error,
                                      hide_parameters=True, connection_invalidated=lost,
                                      dialect=dialect) from exc
        return cursor

    def run(self, session: Session, params: Mapping[str, Any]) -> int:
        """Execute it in the session's transaction; how many rows it changed."""
        cursor = self._cursor(session, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


class PreparedQuery(Prepared, Generic[RowT]):
    """One statement with rows (a SELECT, or a change with RETURNING); `make_row` turns each
    result tuple into the caller's row type."""

    __slots__ = ("_make_row",)

    def __init__(self, statement: Executable, make_row: Callable[[Sequence[Any]], RowT]) -> None:
        super().__init__(statement)
        self._make_row = make_row

    def rows(self, session: Session, params: Mapping[str, Any]) -> list[RowT]:
        cursor = self._cursor(session, params)
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        make = self._make_row
        return [make(row) for row in fetched]

    def first(self, session: Session, params: Mapping[str, Any]) -> RowT | None:
        found = self.rows(session, params)
        return found[0] if found else None
