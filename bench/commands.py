"""Command throughput: 16 concurrent writers, each command loading a case and appending one event, on PostgreSQL.

One run, in a fresh schema per contender (all dropped at the end), measures:

  ours   `LastMeter.update_case(None, case_id, None, assign)` on the application as the API opens it
         (`open_backend`: sealing mapper, key ring, views), over --cases cases, the assignee alternating
         so that every command appends; meanwhile the API's projector follows the log as `serve` runs it
         (`ReadSide.start()`: in a process of its own);
  (a)    the stock eventsourcing `Application` with default settings doing the same work: a tiny
         aggregate with one `@event` method, load + trigger + save, re-run on IntegrityError;
  (b)    raw psycopg: one single-row INSERT + COMMIT per op, one connection per writer.

Then it checks that no command was lost or duplicated (events appended = commands answered) and that
the projection counting events never missed one: after the run the projector catches up and the audit
view must hold one row per event of the log, at the same positions. It prints commands/s, latencies
and the ratios ours/stock (target >= 3x) and ours/raw (target >= 0.5x), PASS or FAIL.

    .venv/bin/python -m bench.commands                         # 15 s per contender
    .venv/bin/python -m bench.commands --seconds 60            # longer
    .venv/bin/python -m bench.commands --commands 20000        # a fixed number per contender
    .venv/bin/python -m bench.commands --only ours --seconds 30  # e.g. under py-spy
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import threading
import time
import uuid
from datetime import date, timedelta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

from api.backend import Backend, open_backend
from api.readside import ReadSide
from api.settings import Settings
from bench import percentile, verdict
from domain.actor import Actor
from domain.application import LastMeter
from domain.case import ServiceCase
from domain.client import id_number_check_digit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ADMIN = Actor("bench", "admin")
WORKER = Actor("bench-worker", "case_worker")
ASSIGNEES = ("alice", "bob")
UNIT = "350502"


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Run:
    """What the writers of one contender did."""

    label: str
    answered: int = 0  # every command answered, warm-up and overrun included
    measured: int = 0  # answered inside the measured window
    seconds: float = 0.0  # the measured window
    latencies: list[float] = field(default_factory=list)  # seconds, of the measured commands
    retries: int = 0  # lost races re-run (where the contender can count them)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.measured / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        return percentile(self.latencies, p)


def drive(label: str, threads: int, seconds: float, commands: int | None, warmup: float,
          make_worker: Callable[[int], tuple[Callable[[], int], Callable[[], None]]]) -> Run:
    """Runs `threads` writers; each calls its command until the time (or the shared number) is used up.

    `make_worker(i)` gives (command, close): `command()` does one command and returns how many lost
    races it re-ran. Commands answered during the warm-up are not measured (none with --commands).
    """
    run = Run(label)
    workers = [make_worker(i) for i in range(threads)]
    tickets = iter(range(commands)) if commands is not None else None
    ticket_lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    clock: dict[str, float] = {}
    results: list[list[tuple[float, float]]] = [[] for _ in range(threads)]
    retries = [0] * threads
    errors: list[str] = []

    def more() -> bool:
        if tickets is None:
            return time.perf_counter() < clock["end"]
        with ticket_lock:
            return next(tickets, None) is not None

    def loop(i: int) -> None:
        command, _ = workers[i]
        done = results[i]
        start.wait()
        try:
            while more():
                began = time.perf_counter()
                retries[i] += command()
                finished = time.perf_counter()
                done.append((finished, finished - began))
        except Exception as error:  # a writer that fails is reported, not hidden
            errors.append(f"writer {i}: {type(error).__name__}: {error}")

    pool = [threading.Thread(target=loop, args=(i,), name=f"{label}-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    began = time.perf_counter()
    warm = 0.0 if commands is not None else warmup
    clock["from"] = began + warm
    clock["end"] = began + warm + seconds
    start.wait()
    for t in pool:
        t.join()
    ended = time.perf_counter()
    for _, close in workers:
        close()
    window_end = clock["end"] if commands is None else ended
    for done in results:
        run.answered += len(done)
        inside = [lat for at, lat in done if clock["from"] <= at <= window_end]
        run.measured += len(inside)
        run.latencies += inside
    run.seconds = window_end - clock["from"]
    run.retries = sum(retries)
    run.errors = errors
    return run


# -- schemas ------------------------------------------------------------------------------------


@contextmanager
def fresh_schema(url: str, prefix: str) -> Iterator[str]:
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))


def count(url: str, statement: SQL, params: tuple = ()) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(statement, params).fetchone()[0]


# -- ours ---------------------------------------------------------------------------------------


@dataclass
class Audit:
    """The check of the projection that counts events."""

    events: int  # events in the log (select_notifications, page by page)
    head: int  # max_notification_id()
    rows: int  # rows of the audit view
    missing: list[int]  # positions in the log but not in the view
    extra: list[int]  # positions in the view but not in the log
    behind_at_end: int  # how far the following projector was behind when the writers stopped

    @property
    def ok(self) -> bool:
        return self.rows == self.events and not self.missing and not self.extra


def seed_cases(app: LastMeter, cases: int) -> list[uuid.UUID]:
    ids = []
    clients = []
    for n in range(max(1, cases // 16)):
        born = date(1980, 1, 1) + timedelta(days=n // 1000)  # one person per ID number
        first17 = f"350502{born:%Y%m%d}{n % 1000:03d}"
        clients.append(app.register_client(ADMIN, None, name=f"bench{n}", id_number=first17 + id_number_check_digit(first17),
                                           phone="13800000000", org_unit=UNIT).id)
    for n in range(cases):
        ids.append(app.open_case(ADMIN, None, client_id=clients[n % len(clients)], org_unit=UNIT,
                                 kind="home_care", need="bench").id)
    return ids


def measure_ours(args: argparse.Namespace) -> tuple[Run, Audit | None, int]:
    with fresh_schema(args.database_url, "bench_cmd_ours") as schema:
        settings = Settings(database_url=args.database_url, postgres_schema=schema,
                            master_key=base64.b64encode(os.urandom(32)).decode(),
                            **({"postgres_pool_size": args.pool_size} if args.pool_size else {}))
        backend: Backend = open_backend(settings)
        readside: ReadSide | None = None
        try:
            app = backend.lastmeter
            ids = seed_cases(app, args.cases)
            readside = ReadSide(backend, in_a_process=settings.projector_process)
            if not args.no_projector:
                readside.projector.catch_up()
                readside.start()  # follows the log while the writers write, where `serve` runs it

            def make_worker(i: int) -> tuple[Callable[[], int], Callable[[], None]]:
                rng = random.Random(i)

                def command() -> int:
                    case_id = ids[rng.randrange(len(ids))]
                    app.update_case(None, case_id, None, lambda c: c.assign(WORKER, next_assignee(c.assignee)))
                    return 0  # update_case re-runs lost races inside; not counted here

                return command, lambda: None

            run = drive("ours", args.threads, args.seconds, args.commands, args.warmup, make_worker)
            audit = None
            topic = f"{ServiceCase.CaseAssigned.__module__}:{ServiceCase.CaseAssigned.__qualname__}"
            events_table = Identifier(schema, LastMeter.name.lower() + "_events")
            appended = count(args.database_url, SQL("SELECT count(*) FROM {} WHERE topic=%s").format(events_table), (topic,))
            if not args.no_projector:
                behind = readside.projector.head() - min(s.position for s in readside.projector.statuses())
                readside.close()
                readside.projector.catch_up()
                audit = check_audit(app, args.database_url, schema, behind)
            return run, audit, appended
        finally:
            if readside is not None:
                readside.close()
            backend.close()


def next_assignee(current: str | None) -> str:
    return ASSIGNEES[1] if current == ASSIGNEES[0] else ASSIGNEES[0]


def check_audit(app: LastMeter, url: str, schema: str, behind: int) -> Audit:
    positions: list[int] = []
    start = 1
    while batch := app.recorder.select_notifications(start, 5000):
        positions += [n.id for n in batch]
        start = batch[-1].id + 1
    head = app.recorder.max_notification_id() or 0
    with psycopg.connect(url) as conn:
        viewed = [r[0] for r in conn.execute(
            SQL("SELECT position FROM {} ORDER BY position").format(Identifier(schema, "view_audit_events"))).fetchall()]
    in_log, in_view = set(positions), set(viewed)
    return Audit(len(positions), head, len(viewed), sorted(in_log - in_view)[:10], sorted(in_view - in_log)[:10], behind)


# -- (a) stock ----------------------------------------------------------------------------------


class StockCase(Aggregate):
    def __init__(self) -> None:
        self.assignee: str | None = None

    @event("Assigned")
    def assign(self, assignee: str) -> None:
        self.assignee = assignee


class StockApp(Application):
    name = "stockbench"


def measure_stock(args: argparse.Namespace) -> tuple[Run, int]:
    parts = urlsplit(args.database_url)
    with fresh_schema(args.database_url, "bench_cmd_stock") as schema:
        env = {  # only what says where the database is: every other setting is the library's default
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_SCHEMA": schema,
        }
        app = StockApp(env=env)
        try:
            ids = []
            for _ in range(args.cases):
                case = StockCase()
                app.save(case)
                ids.append(case.id)

            def make_worker(i: int) -> tuple[Callable[[], int], Callable[[], None]]:
                rng = random.Random(1000 + i)

                def command() -> int:
                    case_id = ids[rng.randrange(len(ids))]
                    for attempt in range(200):
                        case = app.repository.get(case_id)
                        case.assign(next_assignee(case.assignee))
                        try:
                            app.save(case)
                            return attempt
                        except IntegrityError:
                            continue
                    raise RuntimeError("kept losing races")

                return command, lambda: None

            run = drive("stock", args.threads, args.seconds, args.commands, args.warmup, make_worker)
            table = Identifier(schema, StockApp.name.lower() + "_events")
            appended = count(args.database_url, SQL("SELECT count(*) FROM {} WHERE originator_version > 1").format(table))
            return run, appended
        finally:
            app.close()


# -- (b) raw psycopg ----------------------------------------------------------------------------


def measure_raw(args: argparse.Namespace) -> tuple[Run, int]:
    with fresh_schema(args.database_url, "bench_cmd_raw") as schema:
        table = Identifier(schema, "events")
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, aggregate uuid NOT NULL, "
                             "version int NOT NULL, data jsonb NOT NULL)").format(table))
        insert = SQL("INSERT INTO {} (aggregate, version, data) VALUES (%s, %s, %s)").format(table)
        ids = [uuid.uuid4() for _ in range(args.cases)]

        def make_worker(i: int) -> tuple[Callable[[], int], Callable[[], None]]:
            conn = psycopg.connect(args.database_url)
            rng = random.Random(2000 + i)
            version = [0]

            def command() -> int:
                version[0] += 1
                conn.execute(insert, (ids[rng.randrange(len(ids))], version[0],
                                      Jsonb({"actor": WORKER.as_dict(), "assignee": ASSIGNEES[version[0] % 2]})),
                             prepare=True)
                conn.commit()
                return 0

            return command, conn.close

        run = drive("raw", args.threads, args.seconds, args.commands, args.warmup, make_worker)
        appended = count(args.database_url, SQL("SELECT count(*) FROM {}").format(table))
        return run, appended


# -- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("LASTMETER_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--cases", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per contender (default 15)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each (default 1)")
    parser.add_argument("--commands", type=int, default=None, help="a fixed number of commands per contender instead")
    parser.add_argument("--pool-size", type=int, default=None, help="LASTMETER_POSTGRES_POOL_SIZE for ours (default: its own)")
    parser.add_argument("--no-projector", action="store_true", help="ours without the projector following")
    parser.add_argument("--only", choices=("ours", "stock", "raw"), action="append",
                        help="measure only these (repeatable), e.g. for profiling")
    args = parser.parse_args(argv)
    chosen = args.only or ["ours", "stock", "raw"]
    how_long = f"{args.commands:,} commands" if args.commands else f"{args.seconds:.0f} s (+{args.warmup:g} s warm-up)"
    print(f"lastmeter command benchmark: {args.threads} writers, {args.cases} cases, {how_long} per contender, "
          f"on {urlsplit(args.database_url).path.lstrip('/')}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
          flush=True)

    runs: dict[str, Run] = {}
    appended: dict[str, int] = {}
    audit: Audit | None = None
    if "ours" in chosen:
        print("ours: LastMeter.update_case(assign), projector following ...", flush=True)
        runs["ours"], audit, appended["ours"] = measure_ours(args)
    if "stock" in chosen:
        print("(a) stock eventsourcing Application, default settings ...", flush=True)
        runs["stock"], appended["stock"] = measure_stock(args)
    if "raw" in chosen:
        print("(b) raw psycopg, INSERT + COMMIT per op ...", flush=True)
        runs["raw"], appended["raw"] = measure_raw(args)

    names = {"ours": "ours (LastMeter.update_case)", "stock": "(a) stock Application", "raw": "(b) raw psycopg INSERT+COMMIT"}
    print()
    print(f"{'contender':<32}{'commands':>10}{'seconds':>9}{'commands/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'retries':>9}")
    print("-" * 90)
    for key, run in runs.items():
        retries = "-" if key == "ours" else f"{run.retries:,}"
        print(f"{names[key]:<32}{run.measured:>10,}{run.seconds:>9.2f}{run.rate:>12,.0f}"
              f"{run.percentile(50) * 1000:>9.1f}{run.percentile(99) * 1000:>9.1f}{retries:>9}")
    print("-" * 90)

    ok = True
    for key, run in runs.items():
        for error in run.errors[:5]:
            print(f"  {key}: {error}")
        ok &= not run.errors
        same = appended[key] == run.answered
        ok &= same
        print(f"{key}: {run.answered:,} commands answered, {appended[key]:,} events appended "
              f"({'one each' if same else 'MISMATCH'})   {verdict(same)}")
    if audit is not None:
        print(f"projection: audit view {audit.rows:,} rows, log {audit.events:,} events (max notification id "
              f"{audit.head:,}); {audit.behind_at_end:,} behind when the writers stopped; "
              f"missing {audit.missing or 'none'}, extra {audit.extra or 'none'}   {verdict(audit.ok)}")
        ok &= audit.ok
    elif "ours" in chosen:
        print("projection: not run (--no-projector)")
    print()
    if "ours" in runs and "stock" in runs and runs["stock"].rate:
        ratio = runs["ours"].rate / runs["stock"].rate
        ok &= ratio >= 3
        print(f"ours / stock = {runs['ours'].rate:,.0f} / {runs['stock'].rate:,.0f} = {ratio:.2f}x   "
              f"(target >= 3x)   {verdict(ratio >= 3)}")
    if "ours" in runs and "raw" in runs and runs["raw"].rate:
        ratio = runs["ours"].rate / runs["raw"].rate
        ok &= ratio >= 0.5
        print(f"ours / raw   = {runs['ours'].rate:,.0f} / {runs['raw'].rate:,.0f} = {ratio:.2f}x   "
              f"(target >= 0.5x)   {verdict(ratio >= 0.5)}")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
