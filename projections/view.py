"""What every view is: its tables, its handler for a batch of events, its schema's fingerprint.

A view names its tables through `table()`, so that the same code can build a
fresh copy beside the live tables (a rebuild) and the copy can be swapped in
by renaming. A view's schema fingerprint is a hash of its DDL: a changed
view is rebuilt from the log, never migrated by hand.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from projections.store import Tx

NEXT = "__next"  # suffix of the tables a rebuild builds beside the live ones


@dataclass(frozen=True)
class Table:
    name: str
    columns: str  # portable column DDL, e.g. "id TEXT PRIMARY KEY, n BIGINT"
    # for queries, column lists, e.g. ("org_unit, opened_position",); a list may end in a WHERE clause,
    # making the index partial: ("org_unit, due_at WHERE status <> 'closed'",)
    indexes: tuple[str, ...] = ()
    lookups: tuple[str, ...] = ()  # for the view's own handler: made before any row is loaded


class View:
    name: ClassVar[str]
    tables: ClassVar[tuple[Table, ...]]
    stored: ClassVar[bool] = False  # True: `apply` gets the events as stored (bytes), not decoded
    # The aggregate class whose events alone this view reads, each aggregate's rows depending on its own
    # events only: a rebuild may then feed it the log aggregate by aggregate (see Projector.rebuild).
    folds: ClassVar[type | None] = None
    revision: ClassVar[int] = 1  # raised when what a view's rows hold changes but not its tables: rebuilt too
    # Rules held as data that decide what its rows hold (the values an audit row leaves out): a change
    # of them changes the fingerprint as a new revision would, without anyone having to remember it.
    rules: ClassVar[str] = ""

    def __init__(self, suffix: str = "", events_table: str = ""):
        self.suffix = suffix
        self.events_table = events_table  # the log's table, for a view that copies from it in SQL

    def table(self, name: str) -> str:
        return f"view_{name}{self.suffix}"

    @classmethod
    def fingerprint(cls) -> str:
        ddl = "\n".join(f"{t.name}({t.columns}){t.indexes}{t.lookups}" for t in cls.tables)
        if cls.revision > 1:
            ddl += f"\nrevision {cls.revision}"
        if cls.rules:
            ddl += f"\nrules {cls.rules}"
        return hashlib.sha256(ddl.encode()).hexdigest()[:16]

    def create(self, tx: Tx, build: str, indexed: bool = True) -> None:
        """Creates this copy's tables (a rebuild adds the secondary indexes after loading them)."""
        for t in self.tables:
            tx.execute(f"CREATE TABLE {self.table(t.name)} ({t.columns})")
            for i, columns in enumerate(t.lookups):
                tx.execute(f"CREATE INDEX lk_{t.name}_{build}_{i} ON {self.table(t.name)} ({columns})")
        if indexed:
            self.index(tx, build)

    def index(self, tx: Tx, build: str) -> None:
        """Creates the secondary indexes; their names carry `build`, so copies never clash."""
        for t in self.tables:
            for i, index in enumerate(t.indexes):
                columns, where, predicate = index.partition(" WHERE ")
                tx.execute(f"CREATE INDEX ix_{t.name}_{build}_{i} ON {self.table(t.name)} ({columns}) "
                           f"{where}{predicate}")

    def drop(self, tx: Tx) -> None:
        for t in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {self.table(t.name)}")

    def check_against(self, tx: Tx, live: "View") -> None:
        """Inside a rebuild's swap, before `live`'s tables are dropped for this copy's: a view whose rows
        are evidence raises rather than let a copy that disagrees with them replace them."""

    def rename_to_live(self, tx: Tx) -> None:
        for t in self.tables:
            tx.execute(f"ALTER TABLE {self.table(t.name)} RENAME TO view_{t.name}")

    def apply(self, tx: Tx, events: Sequence[tuple[int, Any]]) -> None:
        """Applies a batch of (position, domain event) — or (position, stored event) — to this copy's tables."""
        raise NotImplementedError

    def fold(self, events: Sequence[tuple[int, Any]]) -> Callable[[Tx], None]:
        """A rebuild's batch for a view that `folds`: whole aggregates, each from its first event, none
        of them in the tables yet. Works out the rows outside any transaction and returns what writes
        them (without looking up or updating any row), so a transaction is held only to write."""
        return lambda tx: self.apply(tx, events)
