"""Opening the store (SQLite in WAL mode by default, PostgreSQL by URL) and migrating it."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from pam_unified_mfa.errors import ConfigError, StoreUnavailable

log = logging.getLogger("unified_mfa.store")
MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration's revision; a test checks it against Alembic's own head, and it lets a
# command skip importing Alembic (a fifth of a CLI call's start-up) when nothing is to be done.
SCHEMA_HEAD = "0006"


def normalise_url(url: str) -> str:
    """Select psycopg 3 for plain postgresql:// URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://"):]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise ConfigError("store must be a sqlite:/// or postgresql:// URL")


SQLITE_BUSY_TIMEOUT = 10.0
"""Seconds an SQLite statement waits for another process's write lock before the store is
unavailable."""
_BUSY_TIMEOUT_PRAGMA = f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}"
_FIRST_NAP = 20e-6
_LONGEST_NAP = 1e-3


SQLITE_CHECKPOINT_PAGES = 10_000
"""WAL pages (4 KiB each) after which a commit copies the WAL into the database file.

SQLite's default, 1,000, made a checkpoint every 300 or so logins, each writing back pages
that the next logins changed again (a login changes three: its factor, and the audit table's
last page and index page); two serve processes made 4 to 9% more validations per second with
10,000 (docs/performance.md). The WAL then grows to about 40 MB before it is copied back."""
_CHECKPOINT_PRAGMA = f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed during a write; busy_timeout makes concurrent writers wait instead
    # of failing; foreign keys are off by default in SQLite; the checkpoint threshold is above.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(_BUSY_TIMEOUT_PRAGMA)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(_CHECKPOINT_PRAGMA)
    cursor.close()


def sqlite_first_change(connection: sqlite3.Connection, cursor: sqlite3.Cursor, sql: str,
                        parameters: Any) -> None:
    """Execute the first change of a transaction on SQLite, waiting for another process's
    write lock in naps of 20 µs to 1 ms instead of in SQLite's own.

    SQLite's busy handler sleeps 1 ms at least, then 2, 5, 10 ms and more, while another
    process holds the write lock for tens of microseconds: two `serve` processes on one file
    slept a sixth of their time away so, each with its event loop standing still
    (docs/performance.md). The connection is in no transaction before this change, so the
    reads before it were their own, and a refused attempt loses nothing when it is rolled
    back and made again. Past `SQLITE_BUSY_TIMEOUT` the refusal is raised, as SQLite's own
    handler would have raised it.
    """
    connection.execute("PRAGMA busy_timeout=0")  # not on `cursor`: its results are the change's
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        nap = _FIRST_NAP
        while True:
            try:
                cursor.execute(sql, parameters)
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() + nap > deadline:
                    raise
            connection.rollback()
            time.sleep(nap)
            nap = min(nap * 2, _LONGEST_NAP)
    finally:
        connection.execute(_BUSY_TIMEOUT_PRAGMA)


CONNECTION = "connection"
"""`session.info` key of the connection whose transaction a store session is part of."""
_NUL = "\x00"
_REPLACEMENT = "\ufffd"


def _nul_free(value: Any) -> Any:
    return value.replace(_NUL, _REPLACEMENT) if isinstance(value, str) else value


def nul_free(parameters: Any) -> Any:
    """Statement parameters as PostgreSQL can take them: its text type refuses NUL, which only
    a hostile peer sends (a user name in a RADIUS packet, a form field). No name, client or
    service the store keeps holds one, so U+FFFD in its place matches what the NUL would have
    matched, nothing, and the request gets its ordinary answer instead of a database error.
    Parameters without a NUL, nearly all, are returned as they are."""
    if isinstance(parameters, Mapping):
        if not any(isinstance(v, str) and _NUL in v for v in parameters.values()):
            return parameters
        return {key: _nul_free(value) for key, value in parameters.items()}
    if isinstance(parameters, (list, tuple)) and parameters and isinstance(parameters[0], Mapping):
        return [nul_free(each) for each in parameters]  # executemany
    return parameters


def _nul_free_statement(_connection: Any, _cursor: Any, statement: str, parameters: Any,
                        _context: Any, _executemany: bool) -> tuple[str, Any]:
    return statement, nul_free(parameters)


def _create_private(path: str | None) -> None:
    """Create the SQLite file readable by its owner only; its WAL files inherit the mode."""
    if not path or path == ":memory:":
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # a missing directory is reported when the store is first used


def _roll_back(session: Session | None, connection: Connection | None) -> None:
    if session is not None:
        session.rollback()
    if connection is not None and connection.in_transaction():
        connection.rollback()


class Store:
    """The engine and session factory; every unit of work goes through `session()`."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite:")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": SQLITE_BUSY_TIMEOUT}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 5}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _create_private(self.engine.url.database)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "before_cursor_execute", _nul_free_statement,
                         retval=True)
        # Bound per transaction to its connection (`_transaction`), never to the engine.
        self._sessions = sessionmaker(expire_on_commit=False, join_transaction_mode="rollback_only")
        # SQLite has one writer at a time. Threads of one process that race for it meet
        # SQLITE_BUSY, and SQLite's busy handler then sleeps (1, 2, 5 … up to 100 ms) before it
        # retries: under load most of a transaction's time went to those sleeps. Taking turns
        # here first costs nothing when idle. Other processes' writers are waited for in short
        # naps (`sqlite_first_change`) on the login path, and in SQLite's sleeps elsewhere.
        self._turns: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        # The writer whose turn it is uses one connection and session, kept between
        # transactions: checking a connection out of the pool and in again, and making a
        # session, were a tenth of a login's store time on SQLite (docs/performance.md).
        self._kept: tuple[Connection, Session] | None = None
        self._kept_in_use = False

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error.

        A lost or unreachable database surfaces as StoreUnavailable so that adapters can apply
        their fail mode (S07) instead of mistaking it for a wrong code.
        """
        if self._turns is None:
            yield from self._transaction()
            return
        with self._turns:
            if self._kept_in_use:  # a transaction inside another, in the same thread
                yield from self._transaction()
                return
            self._kept_in_use = True
            try:
                yield from self._transaction(keep=True)
            finally:
                self._kept_in_use = False

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: it does not wait for its turn behind writers (WAL
        readers never block on SQLite's writer), so a long read delays no login."""
        yield from self._transaction()

    def _transaction(self, keep: bool = False) -> Iterator[Session]:
        # The transaction is the connection's; the session joins it and begins its own
        # bookkeeping only when ORM work is done. A login's statements are prepared
        # (store/prepared.py) and run on the connection kept in `session.info`, so a login
        # pays for a connection's begin and commit, not also for an ORM session's: a tenth of
        # the core's instructions per check (docs/performance.md). With `keep`, the connection
        # and session outlive the transaction unless it fails; then both are let go.
        connection: Connection | None = None
        session: Session | None = None
        failed = True
        try:
            if keep and self._kept is not None:
                connection, session = self._kept
            else:
                connection = self.engine.connect()
                session = self._sessions(bind=connection)
                session.info[CONNECTION] = connection
            connection.begin()
            yield session
            if session.in_transaction():
                session.commit()  # flushes; the connection's transaction is committed next
            connection.commit()
            for callback in session.info.pop("after_commit", ()):
                try:
                    callback()
                except Exception:  # a listener's failure must not undo a committed decision
                    log.exception("after-commit listener failed")
            failed = False
        except OperationalError as exc:
            _roll_back(session, connection)
            raise StoreUnavailable(f"store unavailable: {type(exc.orig).__name__}") from None
        except DBAPIError as exc:
            _roll_back(session, connection)
            if exc.connection_invalidated:
                raise StoreUnavailable("store unavailable: connection lost") from None
            raise
        except BaseException:
            _roll_back(session, connection)
            raise
        finally:
            if session is not None:
                session.close()
            if keep and not failed and connection is not None and session is not None:
                self._kept = (connection, session)
            else:
                if keep:
                    self._kept = None
                if connection is not None:
                    connection.close()

    def schema_version(self) -> str | None:
        """The store's Alembic revision, or None for an empty database."""
        try:
            with self.engine.connect() as connection:
                value = connection.execute(text("SELECT version_num FROM alembic_version"))
                return value.scalar()
        except (OperationalError, ProgrammingError) as exc:
            if "alembic_version" in str(exc.orig):
                return None
            raise StoreUnavailable(f"store unavailable: {type(exc.orig).__name__}") from None

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (run by `init` and on start)."""
        if self.schema_version() == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc.orig).__name__}") from None

    def dispose(self) -> None:
        if self._kept is not None:
            self._kept[0].close()
            self._kept = None
        self.engine.dispose()
