"""Prepared statements (store/prepared.py): run on the DBAPI cursor, yet inside the session's
transaction and with SQLAlchemy's failure behaviour, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError

from pam_unified_mfa.errors import StoreUnavailable
from pam_unified_mfa.store import Store, database
from pam_unified_mfa.store.models import Account, table_of
from pam_unified_mfa.store.prepared import Prepared, PreparedQuery

ACCOUNTS = table_of(Account)


class Named(NamedTuple):
    id: str
    name: str


BY_NAME = PreparedQuery(select(ACCOUNTS.c.id, ACCOUNTS.c.name)
                        .where(ACCOUNTS.c.kind == "user", ACCOUNTS.c.name == bindparam("name")),
                        Named._make)
ADD = Prepared(insert(ACCOUNTS).values(
    id=bindparam("id"), kind="user", name=bindparam("name"), failures=0, lock_count=0,
    created_at=0.0))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    yield store
    store.dispose()


def test_a_query_returns_rows_of_its_row_type(store: Store) -> None:
    with store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        assert BY_NAME.rows(session, {"name": "alice"}) == [Named("a1", "alice")]


def test_literal_values_written_in_the_statement_are_sent(store: Store) -> None:
    with store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        session.execute(text("UPDATE accounts SET kind = 'admin' WHERE id = 'a1'"))
        assert BY_NAME.first(session, {"name": "alice"}) is None  # kind = 'user' was compared


def test_pending_orm_changes_are_flushed_before_the_statement(store: Store) -> None:
    with store.session() as session:
        session.add(Account(id="a1", kind="user", name="alice", failures=0, lock_count=0,
                            created_at=0.0))
        assert BY_NAME.first(session, {"name": "alice"}) == Named("a1", "alice")


def test_a_change_is_undone_with_the_transaction_that_failed(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        raise RuntimeError("the caller fails after the statement")
    with store.session() as session:
        assert BY_NAME.first(session, {"name": "alice"}) is None


def _alice_by_orm() -> Account:
    return Account(id="a2", kind="user", name="alice-orm", failures=0, lock_count=0,
                   created_at=0.0)


def test_orm_changes_and_prepared_statements_commit_as_one_transaction(store: Store) -> None:
    with store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        session.add(_alice_by_orm())
    with store.session() as session:
        assert BY_NAME.first(session, {"name": "alice"}) == Named("a1", "alice")
        assert session.get(Account, "a2") is not None


def test_orm_changes_and_prepared_statements_are_undone_together(store: Store) -> None:
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(_alice_by_orm())
        session.flush()
        ADD.run(session, {"id": "a1", "name": "alice"})
        raise RuntimeError("the caller fails after both")
    with store.session() as session:
        assert BY_NAME.first(session, {"name": "alice"}) is None
        assert session.get(Account, "a2") is None


def test_run_says_how_many_rows_changed(store: Store) -> None:
    rename = Prepared(ACCOUNTS.update().where(ACCOUNTS.c.name == bindparam("old"))
                      .values(name=bindparam("new")))
    with store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        assert rename.run(session, {"old": "alice", "new": "alicia"}) == 1
        assert rename.run(session, {"old": "nobody", "new": "x"}) == 0


def test_a_database_error_is_sqlalchemys_exception_without_the_parameters(store: Store) -> None:
    with pytest.raises(IntegrityError) as raised, store.session() as session:
        ADD.run(session, {"id": "a1", "name": "alice"})
        ADD.run(session, {"id": "a1", "name": "secret-looking-value"})
    assert "secret-looking-value" not in str(raised.value)


def test_a_connection_killed_by_postgresql_is_unavailable_then_served_again(
        store: Store, store_url: str) -> None:
    if store.is_sqlite:
        pytest.skip("a server-side disconnect needs PostgreSQL")
    killer = Store(store_url)
    with pytest.raises(StoreUnavailable), store.session() as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with killer.engine.connect() as other:  # the connection dies inside the transaction
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        BY_NAME.rows(session, {"name": "alice"})
    killer.dispose()
    with store.session() as session:  # and the next transaction is served
        assert BY_NAME.rows(session, {"name": "alice"}) == []


class OtherProcessWriting:
    """Another process's write transaction on the same SQLite file: its own connection,
    holding SQLite's write lock from `BEGIN IMMEDIATE` until `release`."""

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, timeout=0, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("INSERT INTO accounts (id, kind, name, failures, lock_count, "
                                "created_at) VALUES ('o1', 'user', 'olga', 0, 0, 0)")

    def release(self) -> None:
        self.connection.commit()
        self.connection.close()


def _sqlite_file(store: Store) -> str:
    if not store.is_sqlite:
        pytest.skip("SQLite's write lock between processes")
    path = store.engine.url.database
    assert path is not None
    return path


def test_a_first_change_waits_for_another_process_write_and_then_commits(store: Store) -> None:
    other = OtherProcessWriting(_sqlite_file(store))
    threading.Timer(0.2, other.release).start()
    with store.session() as session:
        assert BY_NAME.rows(session, {"name": "olga"}) == []  # a read does not wait
        ADD.run(session, {"id": "a1", "name": "alice"})
    with store.session() as session:
        assert BY_NAME.first(session, {"name": "alice"}) == Named("a1", "alice")
        assert BY_NAME.first(session, {"name": "olga"}) == Named("o1", "olga")


def test_a_write_lock_held_past_the_busy_timeout_leaves_the_store_unavailable(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "SQLITE_BUSY_TIMEOUT", 0.1)
    other = OtherProcessWriting(_sqlite_file(store))
    try:
        with pytest.raises(StoreUnavailable), store.session() as session:
            ADD.run(session, {"id": "a1", "name": "alice"})
    finally:
        other.release()
    with store.session() as session:
        assert BY_NAME.first(session, {"name": "alice"}) is None
        assert session.execute(text("PRAGMA busy_timeout")).scalar_one() == 10_000
