"""The store: migrations describe exactly the models, SQLite runs in WAL mode, and a dead
database surfaces as StoreUnavailable rather than as a wrong answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from pam_unified_mfa.core.events import after_commit
from pam_unified_mfa.errors import ConfigError, StoreUnavailable
from pam_unified_mfa.store import Store
from pam_unified_mfa.store.database import SQLITE_CHECKPOINT_PAGES, normalise_url
from pam_unified_mfa.store.models import Account, Base


def test_migrations_create_exactly_the_model_schema(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    store.dispose()
    assert diff == []


def test_migrating_twice_changes_nothing(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    store.migrate()
    with store.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    store.dispose()
    assert version is not None


def sqlite_setting(tmp_path: Path, pragma: str) -> object:
    """What `PRAGMA <pragma>` reads on a connection of a migrated SQLite store."""
    store = Store(f"sqlite:///{tmp_path / 'wal.db'}")
    store.migrate()
    with store.engine.connect() as connection:
        value = connection.execute(text(f"PRAGMA {pragma}")).scalar()
    store.dispose()
    return value


def test_sqlite_store_uses_write_ahead_logging(tmp_path: Path) -> None:
    assert sqlite_setting(tmp_path, "journal_mode") == "wal"


def test_sqlite_store_copies_its_wal_back_every_ten_thousand_pages(tmp_path: Path) -> None:
    assert sqlite_setting(tmp_path, "wal_autocheckpoint") == SQLITE_CHECKPOINT_PAGES == 10_000


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


def test_other_database_urls_are_refused() -> None:
    with pytest.raises(ConfigError):
        normalise_url("mysql://u:p@h/db")


def test_unreachable_postgresql_raises_store_unavailable() -> None:
    store = Store("postgresql://nobody:nothing@127.0.0.1:1/none")
    with pytest.raises(StoreUnavailable), store.session() as session:
        session.execute(text("SELECT 1"))
    store.dispose()


def test_unreachable_store_fails_migration_with_store_unavailable(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    with pytest.raises(StoreUnavailable):
        store.migrate()
    store.dispose()


def test_schema_head_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pam_unified_mfa.store.database import MIGRATIONS, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def test_sqlite_store_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    store.dispose()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_name_holding_a_nul_matches_no_row_instead_of_failing(store_url: str) -> None:
    # PostgreSQL's text refuses NUL; a hostile peer sends one in a user name.
    store = Store(store_url)
    store.migrate()
    with store.session() as session:
        found = session.scalars(select(Account).where(Account.name == "alice\x00")).all()
    store.dispose()
    assert found == []


def _account(name: str) -> Account:
    return Account(id=name, kind="user", name=name, failures=0, lock_count=0, created_at=0.0)


def _account_count(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(Account)) or 0


def test_a_failed_transaction_leaves_nothing_for_the_next(store_url: str) -> None:
    # The writer's connection and session are kept between transactions (SQLite): a failure
    # must not leave its changes, or its pending work, to the next transaction.
    store = Store(store_url)
    store.migrate()
    with pytest.raises(RuntimeError), store.session() as session:
        session.add(_account("alice"))
        session.flush()
        raise RuntimeError("the caller failed after a write")
    with store.session() as session:
        session.add(_account("bob"))
    with store.session() as session:
        names = list(session.scalars(select(Account.name)))
    store.dispose()
    assert names == ["bob"]


def test_after_commit_work_of_a_failed_transaction_never_runs(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    ran: list[str] = []
    with pytest.raises(RuntimeError), store.session() as session:
        after_commit(session, lambda: ran.append("failed"))
        raise RuntimeError("rolled back")
    with store.session() as session:
        after_commit(session, lambda: ran.append("committed"))
    store.dispose()
    assert ran == ["committed"]


def test_a_transaction_inside_another_commits_on_its_own(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    with store.session() as outer:
        with store.session() as inner:
            inner.add(_account("inner"))
        outer.add(_account("outer"))
    count = _account_count(store)
    store.dispose()
    assert count == 2


def test_a_disposed_store_opens_again_on_next_use(store_url: str) -> None:
    store = Store(store_url)
    store.migrate()
    with store.session() as session:
        session.add(_account("alice"))
    store.dispose()
    count = _account_count(store)
    store.dispose()
    assert count == 1
