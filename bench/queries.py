"""Query benchmark: the API's read paths on a city-sized store, p50/p95 against a 20 ms target.

On the synthetic city of the rebuild benchmark (`python -m bench.rebuild`:
100,000 cases, about a million events, schema `bench_c<cases>` of the
benchmark database), with the views caught up, it measures whole requests —
routing, the bearer token's lookup, scope, the query, rendering — through
FastAPI's TestClient against `create_app(Settings(...))` with the projector
thread off:

* workload by org unit (with the API's roll-up) and by assignee, for a city
  supervisor (scope 350500) and a county case worker;
* the case list filtered by county and status, its first page and a page
  deep in by cursor, and a case worker's own list;
* audit search pages by actor (first and deep) and by case;
* a 2,000-event case read as it stood at a moment in its middle (`as_of`),
  by an auditor (a pure read) and by a supervisor (whose read of personal
  values also records a disclosure: one event written), and the same case now.

Every figure is warmed up, then the figures are measured interleaved, round
by round (up to --runs rounds; fewer for a slow figure, within --budget
seconds), so that the load of a shared machine falls on all of them alike.
For each: p50, p95, p99, max, and the process's CPU time per request (Python's
work on both sides of TestClient, PostgreSQL's not included: on a busy
machine it tells own cost from waiting); PASS when p95 is under the target.
The header and the footer say whether the planner has statistics for the
view tables (this server runs no autovacuum, and a rebuild's fresh tables
have none until something ANALYZEs them; --analyze does, first).

For every figure that fails, --diagnose fail (the default) prints, for each
SQL statement of the view store the request ran, its time as the app runs it
(psycopg prepares a statement after 5 runs on a connection; PostgreSQL may
then keep a generic plan) and unprepared, and EXPLAIN (ANALYZE, BUFFERS) of
its custom and its generic plan; then a cProfile of the route and its
dependencies as FastAPI's threadpool runs them.

    .venv/bin/python -m bench.queries
    .venv/bin/python -m bench.queries --runs 50 --diagnose none      # quick
    .venv/bin/python -m bench.queries --diagnose all
    .venv/bin/python -m bench.queries --analyze                      # VACUUM (ANALYZE) the views first

What it writes to the benchmark schema, once: three access tokens, and one
client with one case of 2,000 events (notes and assignments) opened by
`bench-queries`; then, every run, one disclosure event per supervisor read.
The seed's own personal values were sealed under the rebuild benchmark's
random master key and stay unreadable; this benchmark uses a fixed master key
of its own, so that its own case's values read back on every run. Since
`bench.rebuild` reuses a seed only while the events table holds exactly the
seed's count of events, the count recorded in its `bench_seed` table is moved
to the new count after writing (the seed itself is untouched).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg.sql import SQL, Identifier

from bench import BENCH_MASTER_KEY, percentile
from api.backend import Backend, open_backend
from api.readside import views_mapper
from api.paging import encode_cursor
from api.settings import Settings
from bench.rebuild import DEFAULT_URL, EVENTS_TABLE, SEED_TABLE
from domain.access import AccessToken
from domain.actor import Actor
from domain.application import LastMeter
from domain.case import ServiceCase
from domain.client import id_number_check_digit
from domain.errors import AlreadyRegistered
from projections import VIEWS
from projections.runner import POSITIONS, Projector
import projections.store as store_module

BENCH_USER = "bench-queries"
BENCH_ACTOR = Actor(BENCH_USER, "admin")
CITY = "350500"
COUNTY = "350582"  # 晋江市, the county with the most cases in the seed
VILLAGE = f"{COUNTY}001001"  # a community of the seed (bench.rebuild.city_units)
LONG_CASE_EVENTS = 2_000
# A fixed master key of this benchmark's own (see the docstring): not a secret, the data is synthetic.
MASTER_KEY = BENCH_MASTER_KEY
TOKENS = {  # name: (deterministic secret, user, role, org unit)
    "supervisor": ("lm_bench_queries_supervisor_350500", "bench-sup-city", "supervisor", CITY),
    "case_worker": (f"lm_bench_queries_case_worker_{COUNTY}", f"bench-cw-{COUNTY}", "case_worker", COUNTY),
    "auditor": ("lm_bench_queries_auditor", "bench-auditor", "auditor", None),
}


def log(line: str = "") -> None:
    print(line, flush=True)


# -- the store ----------------------------------------------------------------


def seed_row(conn: psycopg.Connection, schema: str) -> tuple[int, int] | None:
    """(cases, events) of the completed seed in this schema, else None."""
    exists = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema=%s AND table_name=%s",
                          (schema, SEED_TABLE)).fetchone()
    if not exists:
        return None
    return conn.execute(SQL("SELECT cases, events FROM {}.{}").format(Identifier(schema), Identifier(SEED_TABLE))).fetchone()


def event_count(conn: psycopg.Connection, schema: str) -> int:
    return conn.execute(SQL("SELECT count(*) FROM {}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()[0]


def keep_seed_reusable(url: str, schema: str) -> None:
    """Records the events table's new count as the seed's, so `bench.rebuild` keeps reusing the seed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("UPDATE {}.{} SET events = (SELECT count(*) FROM {}.{})").format(
            Identifier(schema), Identifier(SEED_TABLE), Identifier(schema), Identifier(EVENTS_TABLE)))


def catch_up_views(backend: Backend) -> str:
    """Brings every view to the head of the log, as the API's ReadSide would, but never from scratch
    through the live path: a view whose schema changed (or that is new, or far behind) is rebuilt
    in one pass with Projector.rebuild() instead (ReadSide's setup would drop it and start at 0)."""
    from api.readside import ReadSide

    app, views = backend.lastmeter, backend.views
    plain = Projector(app, views, VIEWS, mapper=views_mapper(app))  # no setup(): nothing dropped
    with views.read() as tx:
        rows = dict(tx.execute(f"SELECT name, fingerprint FROM {POSITIONS}").fetchall())
    changed = [v.name for v in VIEWS if v.name in rows and rows[v.name] != v.fingerprint()]
    notes = []
    if changed:
        log(f"  views whose schema changed since the seed was projected: {', '.join(changed)}; rebuilding ...")
        started = time.perf_counter()
        plain.rebuild(changed)
        notes.append(f"rebuilt {', '.join(changed)} in {time.perf_counter() - started:.1f} s")
    projector = ReadSide(backend).projector  # creates any view still missing, at position 0
    head = projector.head()
    behind = [s.name for s in projector.statuses() if head - s.position > 50_000]
    if behind:
        log(f"  views far behind the log: {', '.join(behind)}; rebuilding ...")
        started = time.perf_counter()
        projector.rebuild(behind)
        notes.append(f"rebuilt {', '.join(behind)} in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    read = projector.catch_up()
    notes.append(f"caught up {read:,} positions in {time.perf_counter() - started:.2f} s")
    lag = max(s.lag for s in projector.statuses())
    return "; ".join(notes) + f"; lag now {lag}"


QUERIED = ("view_cases", "view_audit_events")  # the view tables these figures read


def view_statistics(url: str, schema: str) -> str:
    """Whether the planner has statistics for the tables queried, and their dead rows."""
    parts = []
    with psycopg.connect(url) as conn:
        for table in QUERIED:
            row = conn.execute(
                "SELECT n_live_tup, n_dead_tup, greatest(last_analyze, last_autoanalyze), "
                "(SELECT count(*) FROM pg_stats s WHERE s.schemaname = t.schemaname AND s.tablename = t.relname) "
                "FROM pg_stat_user_tables t WHERE schemaname=%s AND relname=%s", (schema, table)).fetchone()
            if row is None:
                parts.append(f"{table} missing")
                continue
            live, dead, analyzed, columns = row
            when = f"analyzed {analyzed:%H:%M:%S}" if analyzed else ("never analyzed" if not columns else "analyzed")
            parts.append(f"{table} {when}, {live:,} live / {dead:,} dead rows")
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]
    return "; ".join(parts) + f"; autovacuum {autovacuum}"


def vacuum_analyze(url: str, schema: str) -> str:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for view_cls in VIEWS:
            for table in view_cls.tables:
                conn.execute(SQL("VACUUM (ANALYZE) {}.{}").format(Identifier(schema), Identifier(f"view_{table.name}")))
    return f"VACUUM (ANALYZE) of every view table in {time.perf_counter() - started:.1f} s"


# -- fixtures -----------------------------------------------------------------


@dataclass
class Fixtures:
    tokens: dict[str, str]
    long_case: UUID
    long_case_events: int
    middle: datetime  # a moment in the middle of the long case's life
    seeded_case: UUID  # a case of the seed (its personal values sealed under another master key)
    deep_cases_cursor: str
    deep_cases_depth: int  # open cases of the county newer than the deep cursor
    county_open: int
    actor: str  # a liaison of the seed
    actor_events: int
    deep_audit_cursor: str
    wrote: list[str] = field(default_factory=list)


def ensure_tokens(app: LastMeter, wrote: list[str]) -> dict[str, str]:
    """Bearer tokens with fixed secrets, issued once into the benchmark schema."""
    for name, (secret, user, role, org_unit) in TOKENS.items():
        if app.find_token(secret) is None:
            app.save(AccessToken.issue(BENCH_ACTOR, secret, user, role, org_unit, None))
            wrote.append(f"token {name}")
    return {name: secret for name, (secret, *_) in TOKENS.items()}


def find_long_case(conn: psycopg.Connection) -> tuple[UUID, int] | None:
    row = conn.execute("SELECT id, version FROM view_cases WHERE opened_by=%s AND version >= %s "
                       "ORDER BY version DESC LIMIT 1", (BENCH_USER, LONG_CASE_EVENTS)).fetchone()
    return (UUID(row[0]), row[1]) if row else None


def create_long_case(app: LastMeter) -> UUID:
    """A client and a case of exactly LONG_CASE_EVENTS events: notes (sealed personal values) and
    assignments, alternating, saved through the application in batches of 200."""
    worker = Actor(BENCH_USER, "case_worker")
    first17 = f"{COUNTY}19800101{int(time.time()) % 1000:03d}"
    try:
        client_id = app.register_client(worker, None, name="基准测试", id_number=first17 + id_number_check_digit(first17),
                                        phone="13800000000", org_unit=VILLAGE, address=f"{VILLAGE}号院").id
    except AlreadyRegistered as registered:  # by a run before, under the same number
        client_id = registered.client_id
    opened = app.open_case(worker, None, client_id=client_id, org_unit=VILLAGE, kind="rehabilitation",
                           need="希望参加康复训练", service_mode=None, priority="normal")
    case = app.get_case(opened.id)
    liaisons = [f"lz-{VILLAGE}-{k}" for k in range(3)]
    while case.version < LONG_CASE_EVENTS:
        for _ in range(min(200, LONG_CASE_EVENTS - case.version)):
            if case.version % 2:
                case.add_note(worker, f"第{case.version}次电话回访，本人情况稳定")
            else:
                case.assign(Actor(f"sup-{VILLAGE[:9]}", "supervisor"),
                            next(n for n in liaisons if n != case.assignee))
        app.save(case)
    return case.id


def ensure_snapshots(app: LastMeter, case_id: UUID) -> int:
    """Takes the snapshots a case written before snapshotting was on would have had; how many."""
    interval = app.snapshotting_intervals.get(ServiceCase)
    if not interval:
        return 0
    have = {s.originator_version for s in app.snapshots.get(case_id)}
    missing = [v for v in range(interval, app.get_case(case_id).version + 1, interval) if v not in have]
    for version in missing:
        app.take_snapshot(case_id, version)
    return len(missing)


def prepare(backend: Backend, url: str, schema: str) -> Fixtures:
    app = backend.lastmeter
    wrote: list[str] = []
    tokens = ensure_tokens(app, wrote)
    with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
        found = find_long_case(conn)
    if found is None:
        log(f"  creating a case of {LONG_CASE_EVENTS:,} events ...")
        started = time.perf_counter()
        long_case = create_long_case(app)
        wrote.append(f"a client and a case of {LONG_CASE_EVENTS:,} events ({time.perf_counter() - started:.1f} s)")
    else:
        long_case = found[0]
    taken = ensure_snapshots(app, long_case)
    if taken:
        wrote.append(f"{taken} snapshots of the long case (a seed from before snapshots)")
    events = list(app.events.get(long_case))
    middle = events[len(events) // 2].timestamp
    if wrote:
        backend_note = catch_up_views(backend)
        log(f"  views after writing: {backend_note}")
    with psycopg.connect(url, options=f"-c search_path={schema}") as conn:
        seeded_case = UUID(conn.execute("SELECT id FROM view_cases WHERE org_unit LIKE %s AND opened_by <> %s "
                                        "ORDER BY opened_position LIMIT 1", (COUNTY + "%", BENCH_USER)).fetchone()[0])
        open_positions = [p for (p,) in conn.execute(
            "SELECT opened_position FROM view_cases WHERE org_unit LIKE %s AND status='open' "
            "ORDER BY opened_position DESC", (COUNTY + "%",)).fetchall()]
        depth = len(open_positions) // 2
        actor = f"lz-{VILLAGE}-0"
        positions = [p for (p,) in conn.execute(
            "SELECT position FROM view_audit_events WHERE actor_user=%s ORDER BY position", (actor,)).fetchall()]
    return Fixtures(
        tokens=tokens, long_case=long_case, long_case_events=len(events), middle=middle, seeded_case=seeded_case,
        deep_cases_cursor=encode_cursor(open_positions[depth]), deep_cases_depth=depth, county_open=len(open_positions),
        actor=actor, actor_events=len(positions), deep_audit_cursor=encode_cursor(positions[len(positions) // 2]),
        wrote=wrote,
    )


# -- measuring ----------------------------------------------------------------


@dataclass
class Query:
    label: str
    token: str | None  # a key of Fixtures.tokens
    path: str
    params: dict[str, str]
    note: str = ""


@dataclass
class Result:
    query: Query
    target: float
    times: list[float] = field(default_factory=list)  # ms, wall clock
    cpu: list[float] = field(default_factory=list)  # ms of this process's CPU (all its threads)
    planned: int = 0
    error: str | None = None

    @property
    def runs(self) -> int:
        return len(self.times)

    def pct(self, q: float, values: list[float] | None = None) -> float:
        return percentile(self.times if values is None else values, q * 100) if self.times else float("nan")

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.times) and self.pct(0.95) < self.target


class Runner:
    """Sends one figure's request and times it: wall clock, and the process's CPU time.

    Requests run one at a time and the app runs no projector, so the process's CPU time over a
    request is that request's Python work (client and server side; PostgreSQL's is not in it).
    """

    def __init__(self, client: Any, fixtures: Fixtures):
        self.client = client
        self.fixtures = fixtures

    def once(self, query: Query) -> tuple[float, float]:
        headers = {"Authorization": f"Bearer {self.fixtures.tokens[query.token]}"} if query.token else {}
        cpu, started = time.process_time(), time.perf_counter()
        response = self.client.get(query.path, params=query.params, headers=headers)
        elapsed, cpu = (time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        return elapsed, cpu


def measure_all(runner: Runner, figures: list[Query], runs: int, warmup: int, budget: float,
                target: float) -> list[Result]:
    """Warms every figure up, then measures them interleaved, round by round, so that the load of a
    shared machine falls on every figure alike rather than on whichever is being measured; a slow
    figure gets fewer rounds (its time budget), never fewer than 30."""
    results = [Result(q, target) for q in figures]
    for result in results:
        try:
            warm = [runner.once(result.query)[0] for _ in range(warmup)]
        except Exception as error:  # noqa: BLE001 - reported in the table
            result.error = str(error)
            continue
        estimate = statistics.median(warm) if warm else 1.0
        result.planned = max(30, min(runs, int(budget * 1000 / max(estimate, 0.01))))
    for round_ in range(runs):
        for result in results:
            if result.error is None and round_ < result.planned:
                try:
                    wall, cpu = runner.once(result.query)
                except Exception as error:  # noqa: BLE001 - reported in the table
                    result.error = str(error)
                    continue
                result.times.append(wall)
                result.cpu.append(cpu)
    return results


def queries(f: Fixtures) -> list[Query]:
    case = f"/v1/cases/{f.long_case}"
    as_of = f.middle.isoformat()
    return [
        Query("baseline: GET /healthz (no auth, no store)", None, "/healthz", {}),
        Query("workload by org unit, city supervisor", "supervisor", "/v1/workload", {"by": "org_unit"}),
        Query("workload by org unit, county case worker", "case_worker", "/v1/workload", {"by": "org_unit"}),
        Query("workload by assignee, city supervisor", "supervisor", "/v1/workload", {"by": "assignee"}),
        Query("workload by assignee, county case worker", "case_worker", "/v1/workload", {"by": "assignee"}),
        Query(f"cases ?org_unit={COUNTY}&status=open, page 1", "supervisor", "/v1/cases",
              {"org_unit": COUNTY, "status": "open", "limit": "50"}),
        Query(f"cases ?org_unit={COUNTY}&status=open, deep page", "supervisor", "/v1/cases",
              {"org_unit": COUNTY, "status": "open", "limit": "50", "cursor": f.deep_cases_cursor},
              f"cursor after {f.deep_cases_depth:,} of {f.county_open:,} open cases"),
        Query("cases ?status=open, county case worker", "case_worker", "/v1/cases", {"status": "open", "limit": "50"}),
        Query("audit ?actor=<liaison>&limit=100", "auditor", "/v1/audit/events", {"actor": f.actor, "limit": "100"},
              f"{f.actor}: {f.actor_events} events"),
        Query("audit ?actor=<liaison>&limit=100, deep page", "auditor", "/v1/audit/events",
              {"actor": f.actor, "limit": "100", "cursor": f.deep_audit_cursor}),
        Query("audit ?case_id=<2,000-event case>&limit=100", "auditor", "/v1/audit/events",
              {"case_id": str(f.long_case), "limit": "100"}),
        Query(f"{f.long_case_events:,}-event case as_of middle, auditor", "auditor", case, {"as_of": as_of},
              "a pure read"),
        Query(f"{f.long_case_events:,}-event case as_of middle, supervisor", "supervisor", case, {"as_of": as_of},
              "+ a disclosure written"),
        Query(f"{f.long_case_events:,}-event case now, auditor", "auditor", case, {}),
    ]


# -- diagnosis ----------------------------------------------------------------


@contextmanager
def captured_sql() -> Iterator[list[tuple[str, list[Any]]]]:
    """The view-store statements run meanwhile, as (PostgreSQL SQL, parameters)."""
    statements: list[tuple[str, list[Any]]] = []
    original = store_module.Tx.execute

    def execute(self: Any, statement: str, params: Any = ()) -> Any:
        statements.append((self._sql(statement), list(params)))
        return original(self, statement, params)

    store_module.Tx.execute = execute  # type: ignore[method-assign]
    try:
        yield statements
    finally:
        store_module.Tx.execute = original  # type: ignore[method-assign]


@contextmanager
def profiled_threadpool(profiler: cProfile.Profile) -> Iterator[None]:
    """Profiles what FastAPI runs in its threadpool: the sync routes and dependencies, where the work is.

    TestClient runs the app in a thread of its own, and the app runs sync code in worker threads, so a
    profiler in the calling thread sees nothing but waiting. Requests run one at a time here, so one
    profiler is enabled in whichever worker thread runs each call.
    """
    import fastapi.dependencies.utils as dependency_utils
    import fastapi.routing as routing

    original = routing.run_in_threadpool

    async def run_profiled(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            profiler.enable()
            try:
                return func(*args, **kwargs)
            finally:
                profiler.disable()

        return await original(call)

    routing.run_in_threadpool = dependency_utils.run_in_threadpool = run_profiled  # type: ignore[assignment]
    try:
        yield
    finally:
        routing.run_in_threadpool = dependency_utils.run_in_threadpool = original  # type: ignore[assignment]


def sql_timings(conn: psycopg.Connection, statement: str, params: list[Any], n: int = 15) -> tuple[float, float]:
    """Median ms of the statement as psycopg runs it on a pooled connection (prepared once it has run
    5 times there; PostgreSQL's plan cache may then settle on a generic plan) and unprepared."""
    def median_of(prepare: bool) -> float:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            conn.execute(statement, params, prepare=prepare).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times[-5:])

    return median_of(True), median_of(False)


def explain(conn: psycopg.Connection, statement: str, params: list[Any], generic: bool) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS): the custom plan for these values, or the generic plan of the
    statement prepared (parameters unknown to the planner)."""
    if not generic:
        return [line for (line,) in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()]
    numbers = itertools.count(1)
    conn.execute("PREPARE bench_diagnosis AS " + re.sub(r"%s", lambda _: f"${next(numbers)}", statement))
    try:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        values = psycopg.ClientCursor(conn).mogrify(", ".join(["%s"] * len(params)), params)
        return [line for (line,) in conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_diagnosis({values})").fetchall()]
    finally:
        conn.execute("RESET plan_cache_mode")
        conn.execute("DEALLOCATE bench_diagnosis")


def diagnose(client: Any, fixtures: Fixtures, query: Query, url: str, schema: str, repeat: int = 20) -> None:
    headers = {"Authorization": f"Bearer {fixtures.tokens[query.token]}"} if query.token else {}
    log(f"\n=== {query.label}: GET {query.path} {query.params}")
    with captured_sql() as statements:
        client.get(query.path, params=query.params, headers=headers)
    with psycopg.connect(url, options=f"-c search_path={schema}", autocommit=True) as conn:
        for statement, params in statements:
            prepared, unprepared = sql_timings(conn, statement, params)
            log(f"--- {statement}")
            log(f"    params {params}")
            log(f"    run as the app runs it (psycopg prepares it after 5 runs): {prepared:.1f} ms; "
                f"never prepared: {unprepared:.1f} ms (medians)")
            for generic in (False, True):
                log(f"    EXPLAIN (ANALYZE, BUFFERS), {'generic plan (prepared statement)' if generic else 'custom plan'}:")
                for line in explain(conn, statement, params, generic):
                    log(f"      {line}")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with profiled_threadpool(profiler):
        for _ in range(repeat):
            client.get(query.path, params=query.params, headers=headers)
    wall = time.perf_counter() - started
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"cProfile of the routes and dependencies (FastAPI's threadpool) over {repeat} requests: "
              f"{stats.total_tt * 1000 / repeat:.1f} ms of {wall * 1000 / repeat:.1f} ms a request "
              f"(profiler overhead included); top by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(28)
    out.write("top by own time:\n")
    stats.sort_stats("tottime").print_stats(14)
    for line in out.getvalue().splitlines():
        if line.strip():
            log("    " + line)


# -- the run --------------------------------------------------------------------


def check_foreign_key_read(client: Any, fixtures: Fixtures) -> str:
    """Reads a case of the seed, whose personal values were sealed under another master key: they
    should read as None (like erased), not fail the request."""
    headers = {"Authorization": f"Bearer {fixtures.tokens['auditor']}"}
    try:
        response = client.get(f"/v1/cases/{fixtures.seeded_case}", headers=headers)
    except Exception as error:  # noqa: BLE001 - reported
        return f"FAILS: {type(error).__name__} raised out of the request"
    if response.status_code == 200:
        return f"ok: HTTP 200, need={response.json().get('need')!r}"
    return f"FAILS: HTTP {response.status_code} {response.text[:160]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("LASTMETER_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--cases", type=int, default=100_000, help="the seed's size (schema bench_c<cases>)")
    parser.add_argument("--runs", type=int, default=200, help="measured requests per figure (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--budget", type=float, default=12.0, help="seconds per figure at most, roughly (default 12)")
    parser.add_argument("--target-ms", type=float, default=20.0, help="p95 target (default 20 ms)")
    parser.add_argument("--diagnose", choices=("fail", "all", "none"), default="fail",
                        help="EXPLAIN ANALYZE + cProfile: of failing figures (default), all, or none")
    parser.add_argument("--analyze", action="store_true",
                        help="VACUUM (ANALYZE) the view tables first (this server runs no autovacuum); the statistics "
                             "stay until the next rebuild replaces the tables")
    args = parser.parse_args(argv)

    schema = f"bench_c{args.cases}"
    url = args.database_url
    load_before = os.getloadavg()[0]
    log(f"lastmeter query benchmark: schema {schema} of {urlsplit(url).path.lstrip('/')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}")
    with psycopg.connect(url) as conn:
        seed = seed_row(conn, schema)
        if seed is None or seed[0] != args.cases:
            log(f"no completed seed of {args.cases:,} cases in {schema}: run `python -m bench.rebuild --cases {args.cases}`")
            return 2
        events_before = event_count(conn, schema)
    log(f"seed: {seed[0]:,} cases; {events_before:,} events in the log")

    settings = Settings(database_url=url, postgres_schema=schema, master_key=MASTER_KEY, run_projector=False)
    started = time.perf_counter()
    backend = open_backend(settings)
    try:
        log(f"views: {catch_up_views(backend)}")
        fixtures = prepare(backend, url, schema)
    finally:
        backend.close()
    with psycopg.connect(url) as conn:
        events_after = event_count(conn, schema)
    if fixtures.wrote:
        log(f"wrote: {'; '.join(fixtures.wrote)}")
    if args.analyze:
        log(f"views: {vacuum_analyze(url, schema)}")
    stats_line = view_statistics(url, schema)
    log(f"view statistics: {stats_line}")
    log(f"long case {fixtures.long_case}: {fixtures.long_case_events:,} events, as_of {fixtures.middle.isoformat()}; "
        f"prepared in {time.perf_counter() - started:.1f} s")

    import warnings

    warnings.filterwarnings("ignore", message=".*httpx.*testclient.*")  # starlette's note on its own TestClient
    from fastapi.testclient import TestClient

    from api.app import create_app

    results: list[Result] = []
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        foreign = check_foreign_key_read(client, fixtures)
        log(f"a seed case read under another master key (personal values unreadable): {foreign}")
        log(f"measuring {len(queries(fixtures))} figures interleaved, up to {args.runs} rounds after {args.warmup} "
            f"warm-up requests each ...")
        results = measure_all(Runner(client, fixtures), queries(fixtures), args.runs, args.warmup, args.budget,
                              args.target_ms)
        to_diagnose = [r for r in results if args.diagnose == "all" or (args.diagnose == "fail" and not r.passed)]
        to_diagnose = [r for r in to_diagnose if r.query.token is not None and r.error is None]
        for result in to_diagnose:
            diagnose(client, fixtures, result.query, url, schema)

    with psycopg.connect(url) as conn:
        written = event_count(conn, schema) - events_before
    if written:
        keep_seed_reusable(url, schema)

    log()
    width = 58
    log(f"{'figure':<{width}}{'runs':>5}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'CPU p50':>9}  target  result")
    log("-" * (width + 67))
    for r in results:
        target = "-" if r.query.token is None else f"<{r.target:g}"
        verdict = "ERROR" if r.error else ("-" if r.query.token is None else ("PASS" if r.passed else "FAIL"))
        log(f"{r.query.label:<{width}}{r.runs:>5}{r.pct(0.50):>9.2f}{r.pct(0.95):>9.2f}{r.pct(0.99):>9.2f}"
            f"{(max(r.times) if r.times else float('nan')):>9.2f}{r.pct(0.50, r.cpu):>9.2f}  {target:<6}  {verdict}")
        if r.query.note:
            log(f"    {r.query.note}")
        if r.error:
            log(f"    {r.error}")
    log("-" * (width + 67))
    measured = [r for r in results if r.query.token is not None]
    passed = sum(r.passed for r in measured)
    log(f"{passed}/{len(measured)} figures PASS (p95 < {args.target_ms:g} ms). Whole requests through TestClient, in "
        f"process; CPU = this process's CPU time per request (PostgreSQL's own not included).")
    log(f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs; "
        f"view statistics: {stats_line}")
    log(f"seed case read under another master key: {foreign}")
    log(f"events written by this run: {written:,} (log now {events_before + written:,}; "
        f"{events_after - events_before:,} of them while preparing); bench_seed's count moved along" if written else
        "events written by this run: 0")
    return 0 if passed == len(measured) and foreign.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
