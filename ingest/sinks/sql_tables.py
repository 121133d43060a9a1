"""The tables of the SQL sinks (`SqlSink`, `DedupeSink`) and their format version.

With `table_prefix="ingest_"` a database holds:

- `ingest_sink_meta (k, v)`: `('format', '1')`, the layout version of these
  tables, and `('migrated_from', '0')` when they were migrated;
- `ingest_batches (sink, batch_time, version)`: one row per sink, its newest
  applied batch time and a version for optimistic locking;
- `ingest_offsets (sink, stream, topic, part, next_offset)`: the next Kafka
  offset per sink, input and partition;
- `ingest_applied (sink, item, batch_time)`: received blocks and Flume batches a
  `DedupeSink` applied (`block:<id>`, `flume:<source>#<seq>`).

Format 0 is the layout of releases before the format row: `batches` and
`offsets` only, with the same columns, and every sink named `sql` unless told
otherwise. Tables of format 0 are migrated in place (the `applied` and `meta`
tables are added); their rows keep their meaning. Because the default name of
a sink is no longer `sql`, a sink without `name=` on migrated tables that hold
rows of a sink named `sql`, and none of its own, is refused with a message
saying which name to pass. A format newer than this release reads is refused
with a message naming it, never read.

Creation and migration are one transaction where the driver makes DDL
transactional (PostgreSQL). Where it does not (Python's sqlite3), the meta
table is created first, and only old tables WITHOUT a meta table are taken for
format 0, so a sink starting during another's creation never "migrates" it.
"""

from __future__ import annotations

from typing import Any, Callable

from ingest.errors import ConfigError

FORMAT_VERSION = 1
LEGACY_DEFAULT_NAME = "sql"
"""The name every sink had before format 1 unless given `name=`."""


class SinkTables:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.meta = f"{prefix}sink_meta"
        self.batches = f"{prefix}batches"
        self.offsets = f"{prefix}offsets"
        self.applied = f"{prefix}applied"

    def describe(self) -> str:
        return f"tables {self.prefix}* ({self.batches}, {self.offsets}, ...)"

    # -- on connect ---------------------------------------------------------------------

    def prepare(self, conn: Any, q: Callable[[str], str], sink: str, derived_name: bool) -> None:
        """Create the tables, migrate format 0, or refuse a format this release
        does not read. Leaves no transaction open."""
        meta = self._read_meta(conn)
        for attempt in range(3):
            if meta is not None and "format" in meta:
                break
            # Format 0 is old tables WITHOUT a meta table: a meta table without
            # its format row is a creation by this release still under way.
            legacy = meta is None and self._has_format_0_tables(conn)
            try:
                self._create(conn, legacy)
            except Exception:
                # Another sink created them at the same time (PostgreSQL's IF NOT
                # EXISTS is not safe against that): read what it wrote.
                conn.rollback()
                if attempt == 2:
                    raise
            meta = self._read_meta(conn)
        version = (meta or {}).get("format", f"unknown (no format row in {self.meta})")
        if version != str(FORMAT_VERSION):
            raise ConfigError(
                f"sink {sink}: the {self.describe()} have format version {version}, and this release of ingest "
                f"reads format {FORMAT_VERSION} (and migrates the unversioned tables of earlier releases). "
                "Upgrade ingest to the release that wrote them, or give the sink another table_prefix=")
        if (meta or {}).get("migrated_from") == "0" and derived_name:
            self._check_legacy_name(conn, q, sink)

    def _read_meta(self, conn: Any) -> dict[str, str] | None:
        """The meta rows, or None when there is no meta table."""
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT k, v FROM {self.meta}")
            rows = cur.fetchall()
            conn.commit()
        except Exception:  # noqa: BLE001 - no meta table: format 0 or a new database
            conn.rollback()
            return None
        return {str(k): str(v) for k, v in rows}

    def _has_format_0_tables(self, conn: Any) -> bool:
        if not (self._exists(conn, self.batches) or self._exists(conn, self.offsets)):
            return False
        self._check_legacy_layout(conn)
        return True

    def _exists(self, conn: Any, table: str) -> bool:
        cur = conn.cursor()
        try:
            cur.execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
            cur.fetchall()
            conn.commit()
            return True
        except Exception:  # noqa: BLE001 - absent
            conn.rollback()
            return False

    def _create(self, conn: Any, legacy: bool) -> None:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.meta} (k VARCHAR(100) PRIMARY KEY, v VARCHAR(200) NOT NULL)")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.batches} (sink VARCHAR(200) PRIMARY KEY, "
                    "batch_time BIGINT NOT NULL, version BIGINT NOT NULL)")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.offsets} (sink VARCHAR(200) NOT NULL, "
                    "stream VARCHAR(200) NOT NULL, topic VARCHAR(300) NOT NULL, part INTEGER NOT NULL, "
                    "next_offset BIGINT NOT NULL, PRIMARY KEY (sink, stream, topic, part))")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {self.applied} (sink VARCHAR(200) NOT NULL, "
                    "item VARCHAR(500) NOT NULL, batch_time BIGINT NOT NULL, PRIMARY KEY (sink, item))")
        cur.execute(f"CREATE INDEX IF NOT EXISTS {self.applied}_by_time ON {self.applied} (sink, batch_time)")
        if legacy:
            cur.execute(f"INSERT INTO {self.meta} (k, v) VALUES ('migrated_from', '0') ON CONFLICT (k) DO NOTHING")
        cur.execute(f"INSERT INTO {self.meta} (k, v) VALUES ('format', '{FORMAT_VERSION}') "
                    "ON CONFLICT (k) DO NOTHING")
        conn.commit()

    def _check_legacy_layout(self, conn: Any) -> None:
        """Tables without a format row must be exactly format 0, or be refused."""
        for table, columns in ((self.batches, "sink, batch_time, version"),
                               (self.offsets, "sink, stream, topic, part, next_offset")):
            if not self._exists(conn, table):
                continue
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT {columns} FROM {table} WHERE 1 = 0")
                cur.fetchall()
                conn.commit()
            except Exception as exc:  # noqa: BLE001 - a column is missing
                conn.rollback()
                raise ConfigError(
                    f"table {table} exists without the format row of {self.meta} and is not a sink table of "
                    f"format 0 (columns {columns} expected: {exc}); it was not written by ingest's SQL sinks. "
                    "Give the sink another table_prefix=") from None

    def _check_legacy_name(self, conn: Any, q: Callable[[str], str], sink: str) -> None:
        cur = conn.cursor()
        cur.execute(q(f"SELECT sink FROM {self.batches} WHERE sink IN (?, ?)"), (sink, LEGACY_DEFAULT_NAME))
        names = {str(r[0]) for r in cur.fetchall()}
        conn.commit()
        if LEGACY_DEFAULT_NAME in names and sink not in names:
            raise ConfigError(
                f"sink {sink}: the {self.describe()} were migrated from format 0, where a sink without name= was "
                f"named {LEGACY_DEFAULT_NAME!r}, and they hold the positions of a sink named "
                f"{LEGACY_DEFAULT_NAME!r} but none under this sink's derived name {sink!r}. Pass "
                f"name={LEGACY_DEFAULT_NAME!r} to go on from those positions, or name={sink!r} to start this sink "
                "without them")


__all__ = ["FORMAT_VERSION", "LEGACY_DEFAULT_NAME", "SinkTables"]
