"""`unified-mfa export` / `import`: the whole store in one versioned file, secrets still sealed.

The file is JSON Lines (docs/backup.md): a header, one record per row in foreign-key order, and
an end record. Rows are copied as they are stored: ciphertexts stay ciphertexts and hashes stay
hashes; nothing is ever decrypted. The end record carries a keyed hash (`Keyring.mac`) of every
byte before it, so a truncated or altered file is refused, and so is a restore under a key file
that does not hold the exporting key — which would otherwise import cleanly and then fail every
login.

An import goes into an empty store of the same schema revision, in one transaction: a file that
fails any check leaves the store exactly as it was.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from pam_unified_mfa.crypto import Keyring
from pam_unified_mfa.errors import BackupError, StoreUnavailable
from pam_unified_mfa.store.database import SCHEMA_HEAD, Store
from pam_unified_mfa.store.models import Base, OrgPolicy, table_of

__all__ = ["FORMAT", "FORMAT_VERSION", "BackupSummary", "export_store", "export_to_file",
           "import_file"]

FORMAT = "unified-mfa-export"
FORMAT_VERSION = 1
MAC_PURPOSE = "export"
_BATCH = 500
_HEADER_KEYS = {"format", "version", "schema", "created_at", "key_id", "tables"}
_POLICY = table_of(OrgPolicy)


def _tables() -> list[Table]:
    """Every table of the models, parents before children (the order rows are written in)."""
    return list(Base.metadata.sorted_tables)


@dataclass(frozen=True)
class BackupSummary:
    """What an export holds: shown by both commands, and the header of the file."""

    schema: str
    created_at: str
    key_id: str
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "created_at": self.created_at, "key_id": self.key_id,
                "tables": dict(self.tables), "rows": self.rows}


# -- values ----------------------------------------------------------------------------------

# The Python types the format carries; bytes travel as base64 text. A future column of any
# other type makes export refuse rather than write something import cannot read back.
_CARRIED = (str, int, float, bool, bytes)


@dataclass(frozen=True)
class _Column:
    name: str
    kind: type
    nullable: bool
    length: int | None


@functools.cache
def _columns(table_name: str) -> dict[str, _Column]:
    """What each column of a table accepts; refuses a type the format does not carry."""
    table = Base.metadata.tables[table_name]
    columns: dict[str, _Column] = {}
    for column in table.c:
        kind = column.type.python_type
        if kind not in _CARRIED:
            raise BackupError(f"column {table.name}.{column.name} has a type the export "
                              "format does not carry")
        columns[column.name] = _Column(column.name, kind, bool(column.nullable),
                                       getattr(column.type, "length", None))
    return columns


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    return {name: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
            for name, value in row.items()}


def _decode(table: Table, raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Check one row against its table's columns and turn it back into stored values."""
    columns = _columns(table.name)
    if raw.keys() != columns.keys():
        raise BackupError(f"{where}: the row's columns are not those of table {table.name}")
    row: dict[str, Any] = {}
    for name, value in raw.items():
        kind, length = columns[name].kind, columns[name].length
        if value is None:
            if not columns[name].nullable:
                raise BackupError(f"{where}: {table.name}.{name} may not be empty")
        elif kind is bytes:
            if not isinstance(value, str):
                raise BackupError(f"{where}: {table.name}.{name} is not base64 text")
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise BackupError(f"{where}: {table.name}.{name} is not base64 text") from None
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not kind:
            raise BackupError(f"{where}: {table.name}.{name} is not of type {kind.__name__}")
        if isinstance(value, str) and length is not None and len(value) > length:
            raise BackupError(f"{where}: {table.name}.{name} is longer than {length}")
        row[name] = value
    return row


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


# -- export ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _snapshot(store: Store) -> Iterator[Connection]:
    """One read-only transaction that sees the whole store as of one instant."""
    with store.engine.connect() as connection:
        if not store.is_sqlite:
            connection.execution_options(isolation_level="REPEATABLE READ",
                                         postgresql_readonly=True)
        try:
            with connection.begin():
                if store.is_sqlite:
                    # pysqlite opens no transaction for reads: each SELECT would see its own
                    # moment. An explicit BEGIN holds one WAL snapshot (writers go on).
                    connection.exec_driver_sql("BEGIN")
                yield connection
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc.orig).__name__}") from None


def export_store(store: Store, keyring: Keyring, out: IO[bytes]) -> BackupSummary:
    """Write the whole store to `out` as one consistent snapshot; returns what was written."""
    tables = _tables()
    for table in tables:
        _columns(table.name)
    schema = store.schema_version()
    if schema != SCHEMA_HEAD:
        raise BackupError(f"the store is at schema revision {schema}, this unified-mfa at "
                          f"{SCHEMA_HEAD}: run `unified-mfa init` first")
    digest = hashlib.sha256()

    def write(data: bytes) -> None:
        digest.update(data)
        out.write(data)

    with _snapshot(store) as connection:
        counts = {t.name: int(connection.scalar(select(func.count()).select_from(t)) or 0)
                  for t in tables}
        summary = BackupSummary(schema=schema,
                                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                key_id=keyring.active_key_id, tables=counts)
        write(_line({"format": FORMAT, "version": FORMAT_VERSION, "schema": summary.schema,
                     "created_at": summary.created_at, "key_id": summary.key_id,
                     "tables": counts}))
        for table in tables:
            query = select(table).order_by(*table.primary_key.columns)
            result = connection.execute(query.execution_options(yield_per=_BATCH))
            for row in result.mappings():
                write(_line({"table": table.name, "row": _encode(dict(row))}))
    mac = keyring.mac(digest.digest(), MAC_PURPOSE)
    out.write(_line({"end": {"rows": summary.rows, "mac": mac}}))
    out.flush()
    return summary


def export_to_file(store: Store, keyring: Keyring, path: Path) -> BackupSummary:
    """Export into `path` with mode 0600, replacing it only once the new file is complete."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            summary = export_store(store, keyring, handle)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise BackupError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return summary


# -- reading a file --------------------------------------------------------------------------


class _Reader:
    """Walks an export file record by record, checking its shape and hashing what it read.

    Messages name the file and line, never a value: rows hold hashes and ciphertexts.
    """

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self.handle = handle
        self.digest = hashlib.sha256()
        self.number = 0
        self.end: dict[str, Any] | None = None

    def _fail(self, why: str) -> BackupError:
        return BackupError(f"{self.path} line {self.number}: {why}; nothing imported")

    def _record(self) -> dict[str, Any] | None:
        raw = self.handle.readline()
        if not raw:
            return None
        self.number += 1
        if not raw.endswith(b"\n"):
            raise self._fail("the line is cut off (truncated file)")
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise self._fail("not a JSON record") from None
        if not isinstance(record, dict):
            raise self._fail("not a JSON object")
        if "end" not in record:
            self.digest.update(raw)
        return record

    def header(self) -> BackupSummary:
        record = self._record()
        if record is None:
            raise BackupError(f"{self.path} is empty; nothing imported")
        if record.get("format") != FORMAT or set(record) != _HEADER_KEYS:
            raise self._fail("not a unified-mfa export header")
        if type(record["version"]) is not int or record["version"] != FORMAT_VERSION:
            raise self._fail(f"format version {record['version']!r} is not supported "
                             f"(this unified-mfa reads version {FORMAT_VERSION})")
        schema, tables = record["schema"], record["tables"]
        if schema != SCHEMA_HEAD:
            raise BackupError(f"{self.path} was exported at schema revision {schema}, this "
                              f"unified-mfa and its store are at {SCHEMA_HEAD}: import it with "
                              "the version that wrote it, then upgrade; nothing imported")
        names = [t.name for t in _tables()]
        if (not isinstance(tables, dict) or set(tables) != set(names)
                or not all(type(n) is int and n >= 0 for n in tables.values())):
            raise self._fail("the header's table counts do not match this schema's tables")
        if not isinstance(record["key_id"], str) or not isinstance(record["created_at"], str):
            raise self._fail("the header's key_id or created_at is not text")
        return BackupSummary(schema=schema, created_at=record["created_at"],
                             key_id=record["key_id"], tables={n: tables[n] for n in names})

    def rows(self) -> Iterator[tuple[Table, dict[str, Any]]]:
        """Each row in file order; tables must come in the order export writes them."""
        order = {t.name: (i, t) for i, t in enumerate(_tables())}
        position = 0
        while (record := self._record()) is not None:
            if "end" in record:
                if set(record) != {"end"} or not isinstance(record["end"], dict):
                    raise self._fail("malformed end record")
                self.end = record["end"]
                if self.handle.read(1):
                    self.number += 1
                    raise self._fail("content after the end record")
                return
            if set(record) != {"table", "row"} or not isinstance(record["row"], dict):
                raise self._fail("not a row record")
            index, table = order.get(record["table"], (-1, None))
            if table is None:
                raise self._fail("a row of an unknown table")
            if index < position:
                raise self._fail(f"a row of {table.name} after rows of a later table")
            position = index
            yield table, _decode(table, record["row"], f"{self.path} line {self.number}")
        raise BackupError(f"{self.path} ends before its end record (truncated); "
                          "nothing imported")


def _verify(path: Path, keyring: Keyring) -> tuple[BackupSummary, bytes]:
    """First pass: the whole file is well formed, complete and sealed by a key we hold."""
    with path.open("rb") as handle:
        reader = _Reader(path, handle)
        summary = reader.header()
        if summary.key_id not in keyring.key_ids:
            raise BackupError(
                f"{path} was written under key {summary.key_id}, which the key file "
                f"{keyring.path} does not hold: restore with the exporting installation's key "
                "file; nothing imported")
        seen = dict.fromkeys(summary.tables, 0)
        for table, _row in reader.rows():
            seen[table.name] += 1
        end = reader.end or {}
        mac = end.get("mac")
        if set(end) != {"rows", "mac"} or not isinstance(mac, str):
            raise BackupError(f"{path}: malformed end record; nothing imported")
        # A keyed hash reads "<key id>.<hex>" (Keyring.mac).
        if mac.partition(".")[0] != summary.key_id or not keyring.verify_mac(
                reader.digest.digest(), MAC_PURPOSE, mac):
            raise BackupError(f"{path} was altered or damaged after export (its checksum does "
                              "not match); nothing imported")
        if seen != summary.tables or end["rows"] != summary.rows:
            raise BackupError(f"{path}: row counts differ from its header; nothing imported")
    return summary, reader.digest.digest()


# -- import ----------------------------------------------------------------------------------


def _held_data(connection: Connection) -> dict[str, int]:
    """Rows a freshly initialised store would not hold: all but the untouched policy row."""
    held: dict[str, int] = {}
    for table in _tables():
        query = select(func.count()).select_from(table)
        if table is _POLICY:
            query = query.where(_POLICY.c.version != 1)
        count = int(connection.scalar(query) or 0)
        if count:
            held[table.name] = count
    return held


def _fix_sequences(connection: Connection) -> None:
    """Move PostgreSQL's id sequences past the imported ids, so the next insert gets a new one."""
    for table in _tables():
        column = table.autoincrement_column
        if column is None:
            continue
        highest = func.max(column)
        connection.execute(select(func.setval(
            func.pg_get_serial_sequence(table.name, column.name),
            func.coalesce(highest, 1), highest.is_not(None))))


def import_file(store: Store, keyring: Keyring, path: Path) -> BackupSummary:
    """Load an export into an empty store at the same schema revision, all or nothing."""
    summary, digest = _verify(path, keyring)
    current = store.schema_version()
    if current != summary.schema:
        raise BackupError(f"the target store is at schema revision {current}, {path} at "
                          f"{summary.schema}: run `unified-mfa init` on it first; "
                          "nothing imported")
    table_name = ""
    try:
        with store.engine.connect() as connection:
            if not store.is_sqlite:
                connection.execution_options(isolation_level="SERIALIZABLE")
            with connection.begin():
                if store.is_sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")  # no writer slips in between
                held = _held_data(connection)
                if held:
                    raise BackupError(
                        "the target store already holds data (rows in "
                        + ", ".join(f"{n}: {c}" for n, c in held.items())
                        + "): import only into a new, empty store; nothing imported")
                connection.execute(_POLICY.delete())
                with path.open("rb") as handle:
                    reader = _Reader(path, handle)
                    reader.header()
                    batch: list[dict[str, Any]] = []
                    current_table: Table | None = None
                    for table, row in reader.rows():
                        if table is not current_table or len(batch) >= _BATCH:
                            if current_table is not None and batch:
                                connection.execute(current_table.insert(), batch)
                            batch, current_table, table_name = [], table, table.name
                        batch.append(row)
                    if current_table is not None and batch:
                        connection.execute(current_table.insert(), batch)
                if reader.digest.digest() != digest:
                    raise BackupError(f"{path} changed while it was imported; nothing imported")
                if not store.is_sqlite:
                    _fix_sequences(connection)
    except IntegrityError:
        # The database's message would quote the row; the table is enough to look further.
        raise BackupError(f"a row of {table_name or 'the file'} conflicts with the target "
                          "store; nothing imported") from None
    except OperationalError as exc:
        raise StoreUnavailable(f"store unavailable: {type(exc.orig).__name__}") from None
    except DBAPIError as exc:
        raise BackupError(f"the store refused the import ({type(exc.orig).__name__}); "
                          "nothing imported") from None
    return summary
