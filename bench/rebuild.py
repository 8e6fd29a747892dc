"""Rebuild benchmark: how fast the read side rebuilds its views from a city-sized log.

One run, on PostgreSQL:

1. seeds a synthetic city (default 100,000 cases, about a million events)
   with the real domain — `ServiceCase` commands on `LastMeter`'s aggregates
   — written through the application's event store in large batches; a seed
   already there (same schema, same size, completed) is reused;
2. measures (a) the library's stock `eventsourcing.projection.ProjectionRunner`
   with a trivial projection committing one transaction per event, on a
   prefix of the log, time-boxed; (b) reading the whole events table with
   `COPY ... TO STDOUT`; (c) our `Projector.rebuild()` of every view in
   `projections.VIEWS` — all of them together (in one pass where the
   projector can), then each alone — as the API's ReadSide runs it, with
   resident memory (this process and the fold's) sampled every 100,000
   events folded or read;
3. measures (d) the floor of any projection written in Python: reading the log through the
   application's recorder and parsing each event's JSON, nothing else;
4. prints the figures and the ratios ours/stock (target >= 30x) and
   ours/COPY (target >= 0.25x). "Ours" counts an event once per view it was
   applied to (the sum over views); the same ratios counting each log event
   once are printed beside them, and the floor's ratio to COPY.

    .venv/bin/python -m bench.rebuild                      # 100k cases
    .venv/bin/python -m bench.rebuild --cases 5000         # quick run
    .venv/bin/python -m bench.rebuild --cases 5000 --skip-stock --no-per-view --profile /tmp/rebuild.pstats
    .venv/bin/python -m bench.rebuild --batch-size 20000            # the projector with larger batches

Each size lives in its own schema (`bench_c<cases>`) of the benchmark
database, which is created if missing.
"""

from __future__ import annotations

import argparse
import cProfile
import heapq
import json
import os
import pstats
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from eventsourcing.domain import CanCreateTimestamp
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from psycopg.sql import SQL, Identifier

from bench import BENCH_MASTER_KEY
import projections.privacy as privacy
from api.backend import Backend, open_backend
from api.demo import demo_units
from api.readside import ReadSide
from api.settings import Settings
from domain.actor import Actor
from domain.application import LastMeter
from domain.case import CATEGORY_DIGITS, CLOSED, ON_HOLD, OUTCOMES, SERVICE_MODES, ServiceCase
from domain.client import Client, id_number_check_digit
from domain.clock import SHANGHAI
from domain.errors import DomainError
from domain.kinds import ANY_OPEN, Step
from domain.orgs import OrgUnit
from projections import VIEWS

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/lastmeter_bench"
EVENTS_TABLE = LastMeter.name.lower() + "_events"  # the library names it after the application
SEED_TABLE = "bench_seed"
DAY = 86_400.0
MB = 1024.0


# -- memory -----------------------------------------------------------------


def _status(field_name: str) -> int:
    """A VmXXX line of /proc/self/status, in kB."""
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", f.read(), re.M)
    return int(match.group(1)) if match else 0


def rss_kb() -> int:
    """Resident memory of this process and of its children (a rebuild's fold runs in one)."""
    total = _status("VmRSS")
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:  # it ended meanwhile
                continue
            match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
            total += int(match.group(1)) if match else 0
    return total


def hwm_kb() -> int:
    return _status("VmHWM")


def reset_hwm() -> bool:
    """Resets the peak-RSS mark (Linux: write 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# -- the database -----------------------------------------------------------


def ensure_database(url: str) -> None:
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (dbname,)).fetchone():
            conn.execute(SQL("CREATE DATABASE {}").format(Identifier(dbname)))


def seeded(conn: psycopg.Connection, schema: str, cases: int) -> int | None:
    """The events of a completed seed of this size in this schema, else None."""
    exists = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema=%s AND table_name=%s", (schema, SEED_TABLE)
    ).fetchone()
    if not exists:
        return None
    row = conn.execute(SQL("SELECT cases, events FROM {}.{}").format(Identifier(schema), Identifier(SEED_TABLE))).fetchone()
    if row is None or row[0] != cases:
        return None
    count = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()[0]
    return count if count == row[1] else None


# -- seeding ----------------------------------------------------------------


class SimulatedClock:
    """Gives events the seeder's simulated time instead of the wall clock.

    Domain commands take their timestamps from the library's
    `create_timestamp()`; while installed, it answers `self.now`, so a year
    of city life gets a year of timestamps (due dates, holds, months of
    liaison work) rather than all falling in the few minutes of the seed.
    """

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    @contextmanager
    def installed(self) -> Iterator[None]:
        original = CanCreateTimestamp.__dict__["create_timestamp"]
        CanCreateTimestamp.create_timestamp = staticmethod(lambda: self.now)  # type: ignore[method-assign]
        try:
            yield
        finally:
            CanCreateTimestamp.create_timestamp = original  # type: ignore[method-assign]


NEEDS = ("需要办理残疾人证", "希望参加康复训练", "申请辅助器具", "家中需要无障碍改造", "希望得到婚恋辅导",
         "需要居家托养服务", "希望参加就业培训", "需要心理疏导", "申请健康查体")
NOTES = ("电话回访，本人情况稳定", "家属反映近期行动不便", "已告知所需材料", "协调街道残联跟进",
         "本人表示满意", "需再次确认联系方式", "转交社区医生评估")
TEXTS = ("情况良好", "需进一步观察", "按计划执行", "功能有所改善", "家属配合", "材料齐全")
REASONS = ("本人外出务工", "住院治疗", "等待材料补充", "家属要求暂缓", "重新评估后继续")
SURNAMES = "陈林黄张吴王李蔡郑许"
GIVEN = ("秀英", "志强", "丽华", "建国", "美玲", "伟", "芳", "明", "婷婷", "海峰")
KIND_WEIGHTS = {"certificate": 22, "rehabilitation": 16, "assistive_device": 14, "home_modification": 8,
                "marriage_counselling": 4, "home_care": 10, "employment_training": 8,
                "psychological_counselling": 8, "health_check": 10}
SEED_ACTOR = Actor("bench-seeder", "admin")


def city_units(townships: int = 8, communities: int = 10) -> list[OrgUnit]:
    return demo_units(townships, communities)


@dataclass
class SeedStats:
    cases: int = 0
    clients: int = 0
    events: int = 0
    refused: int = 0  # commands the domain refused (should stay near zero)
    by_type: dict[str, int] = field(default_factory=dict)


class CitySeeder:
    """Lives the cases of a synthetic city through the domain, in simulated time order.

    Each case is a generator that yields the moment of its next command and
    performs it when resumed; a heap runs all of them in time order, so the
    events of concurrent cases interleave in the log as they would in life
    (a case's events are spread over weeks of other cases' events). Events
    are collected from the aggregates and written in large batches through
    `app.events.put()`, so through the application's own mapper: with the
    backend's `PersonalDataMapper`, personal values are sealed per person
    exactly as the API stores them.
    """

    def __init__(self, app: LastMeter, cases: int, seed: int = 2024, flush_every: int = 5_000,
                 log: Callable[[str], None] = lambda line: print(line, flush=True)):
        self.app = app
        self.cases = cases
        self.rng = random.Random(seed)
        self.flush_every = flush_every
        self.log = log
        self.clock = SimulatedClock()
        self.end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
        self.start = self.end - timedelta(days=365)
        self.buffer: list[Any] = []
        self.stats = SeedStats()
        self.clients: list[tuple[UUID, str, str]] = []  # (id, id number, community)
        self.villages: list[str] = []

    # -- driving --------------------------------------------------------

    def run(self) -> SeedStats:
        app, rng = self.app, self.rng
        app.found()
        units = city_units()
        app.add_org_units(SEED_ACTOR, units)
        self.villages = [u.code for u in units if u.kind == "community"]
        span = (self.end - self.start).total_seconds()
        heap: list[tuple[float, int, Iterator[float]]] = []
        for i in range(self.cases):
            life = self._case_life(rng.random() * span * 0.97)
            heap.append((next(life), i, life))
        heapq.heapify(heap)
        seq = self.cases
        started = time.perf_counter()
        next_report = 100_000
        with self.clock.installed():
            while heap:
                at, _, life = heapq.heappop(heap)
                self.clock.now = self.start + timedelta(seconds=at)
                try:
                    following = next(life)  # performs the command due at `at`
                except StopIteration:
                    continue
                finally:
                    if len(self.buffer) >= self.flush_every:
                        self._flush()
                        if self.stats.events >= next_report:
                            rate = self.stats.events / (time.perf_counter() - started)
                            self.log(f"  seeded {self.stats.events:>9,} events ({rate:,.0f}/s), "
                                     f"{self.stats.cases:,} cases, RSS {rss_kb() / MB:,.0f} MB")
                            next_report += 100_000
                if following < span:
                    seq += 1
                    heapq.heappush(heap, (following, seq, life))
        self._flush()
        return self.stats

    def _emit(self, aggregate: Any) -> None:
        for event in aggregate.collect_events():
            self.buffer.append(event)
            name = type(event).__name__
            self.stats.by_type[name] = self.stats.by_type.get(name, 0) + 1

    def _flush(self) -> None:
        if self.buffer:
            self.app.events.put(self.buffer)
            self.stats.events += len(self.buffer)
            self.buffer = []

    # -- a case's life ----------------------------------------------------

    def _gap(self, mean_days: float, at_least_hours: float = 0.25) -> float:
        return at_least_hours * 3600 + self.rng.expovariate(1 / (mean_days * DAY))

    def _case_life(self, t: float) -> Iterator[float]:
        rng = self.rng
        yield t
        village = rng.choice(self.villages)
        liaisons = [f"lz-{village}-{k}" for k in range(3)]
        supervisor = Actor(f"sup-{village[:9]}", "supervisor")
        client_id, id_number = self._client(village)
        worker = Actor(rng.choice(liaisons), "case_worker")
        kind = rng.choices(list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))[0]
        case = ServiceCase.open(
            worker, kind=kind, client_id=client_id, org_unit=village, need=rng.choice(NEEDS),
            service_mode=rng.choice((*SERVICE_MODES, None)), priority=rng.choices(("normal", "high", "urgent"), (80, 15, 5))[0],
        )
        self.stats.cases += 1
        self._emit(case)

        t += self._gap(1.0)
        yield t
        assignee = rng.choice(liaisons)
        case.assign(supervisor, assignee)
        self._emit(case)

        budget = rng.randint(8, 21)
        loops: dict[str, int] = {}
        reopened = False
        while budget > 0:
            budget -= 1
            act = self._choose(case, loops, reopened)
            if act is None:
                return
            if act[0] == "reassign":
                act = ("reassign", rng.choice([name for name in liaisons if name != assignee]))
            t += self._gap(1.5 if act[0] in ("note", "visit") else 4.0)
            yield t
            if act[0] == "reopen":
                reopened = True
            self._perform(case, act, assignee, liaisons, supervisor, id_number)
            if act[0] == "reassign":
                assignee = act[1]
            self._emit(case)

    def _client(self, village: str) -> tuple[UUID, str]:
        rng = self.rng
        if self.clients and rng.random() < 0.4:
            client_id, id_number, _ = rng.choice(self.clients)
            return client_id, id_number
        born = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        first17 = f"{village[:6]}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
        id_number = first17 + id_number_check_digit(first17)
        client = Client.register(
            Actor(f"lz-{village}-0", "case_worker"), name=rng.choice(SURNAMES) + rng.choice(GIVEN),
            id_number=id_number, phone=f"13{rng.randrange(0, 10**9):09d}", org_unit=village, address=f"{village}号院",
        )
        self.clients.append((client.id, id_number, village))
        self.stats.clients += 1
        self._emit(client)
        return client.id, id_number

    def _choose(self, case: ServiceCase, loops: dict[str, int], reopened: bool) -> tuple | None:
        """The next command for this case, given its state; None ends its life."""
        rng = self.rng
        if case.status == CLOSED:
            return ("reopen",) if not reopened and rng.random() < 0.08 else None
        if case.status == ON_HOLD:
            return ("resume",) if rng.random() < 0.85 else ("note",)
        decl = case.declaration
        steps = [s for s in decl.steps if s.allowed_from(case.stage) and ANY_OPEN not in s.from_stages]
        options: list[tuple[tuple, float]] = []
        for s in steps:
            repeat = s.to_stage == case.stage or s.name == "reject_works"
            weight = 3.0 if not repeat else (2.5 if loops.get(s.name, 0) < rng.randint(1, 4) else 0.2)
            if s.name == "reject_works":
                weight = 0.6
            if s.closes_with == "refused":
                weight = 0.5
            options.append((("step", s), weight))
        refusals = [s for s in decl.steps if ANY_OPEN in s.from_stages]
        for s in refusals:
            options.append((("step", s), 0.08))
        if case.stage in decl.serves_from:
            options.append((("close", "served"), 5.0 if not steps else 1.0))
        options += [(("note",), 1.3), (("visit",), 1.2), (("hold",), 0.25), (("reassign",), 0.15), (("withdraw",), 0.07)]
        act = rng.choices([o for o, _ in options], [w for _, w in options])[0]
        if act[0] == "step":
            loops[act[1].name] = loops.get(act[1].name, 0) + 1
        return act

    def _perform(self, case: ServiceCase, act: tuple, assignee: str, liaisons: list[str], supervisor: Actor,
                 id_number: str) -> None:
        rng = self.rng
        actor = Actor(assignee, "case_worker")
        try:
            match act[0]:
                case "step":
                    step: Step = act[1]
                    case.take_step(actor, step.name, self._payload(case, step, id_number), id_number=id_number)
                case "close":
                    case.close(actor, act[1])
                case "withdraw":
                    case.close(actor, rng.choice(OUTCOMES[1:]), rng.choice(REASONS))
                case "note":
                    case.add_note(rng.choice((actor, supervisor)), rng.choice(NOTES))
                case "visit":
                    visited = self.clock.now - timedelta(minutes=rng.randrange(10, 600))
                    case.record_visit(actor, rng.choice(SERVICE_MODES), visited, "入户走访，了解近况")
                case "hold":
                    case.put_on_hold(actor, rng.choice(REASONS))
                case "resume":
                    case.resume(actor, rng.choice(REASONS))
                case "reopen":
                    case.reopen(supervisor, rng.choice(REASONS))
                case "reassign":
                    case.assign(supervisor, act[1])
        except DomainError:
            self.stats.refused += 1

    def _payload(self, case: ServiceCase, step: Step, id_number: str) -> dict:
        rng, now = self.rng, self.clock.now
        payload: dict[str, Any] = {}
        for f in step.fields:
            if not f.required and rng.random() < 0.5:
                continue
            match f.type:
                case "text":
                    value: Any = rng.choice(TEXTS)
                case "date":
                    value = now.astimezone(SHANGHAI).date().isoformat()
                case "datetime":
                    value = (now + timedelta(days=rng.randrange(1, 20))).astimezone(SHANGHAI).isoformat()
                case "choice":
                    value = rng.choice(f.choices)
                case "integer":
                    low = f.minimum if f.minimum is not None else 0
                    value = rng.randint(low, min(f.maximum if f.maximum is not None else low + 100, low + 120))
                case "money":
                    if f.name == "approved_amount":
                        value = str((Decimal(case.details["quote"]) * Decimal("0.9")).quantize(Decimal("0.01")))
                    else:
                        value = f"{rng.randint(2000, 50000)}.00"
                case "boolean":
                    value = rng.random() < 0.5
                case "certificate_number":
                    value = f"{id_number}{CATEGORY_DIGITS[case.details['category']]}{case.details['grade']}"
                case other:
                    raise ValueError(f"no synthetic value for field type {other}")
            payload[f.name] = value
        return payload


# -- (a) the library's stock projection runner -------------------------------


class CountingRecorder(PostgresTrackingRecorder):
    """A trivial materialised view: a counter, bumped with the tracking record in one transaction per event."""

    def __init__(self, datastore: Any, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        self.counter_table = f"{self.tracking_table_name}_counter"
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {0}.{1} (name text PRIMARY KEY, n bigint NOT NULL)").format(
                Identifier(self.datastore.schema), Identifier(self.counter_table))
        )
        self.incr_statement = SQL(
            "INSERT INTO {0}.{1} VALUES ('events', 1) ON CONFLICT (name) DO UPDATE SET n = {1}.n + 1"
        ).format(Identifier(self.datastore.schema), Identifier(self.counter_table))

    def count(self, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.incr_statement, prepare=True)
            self._insert_tracking(curs, tracking)

    def reset(self, application_name: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {0}.{1} WHERE application_name=%s").format(
                Identifier(self.datastore.schema), Identifier(self.tracking_table_name)), (application_name,))
            curs.execute(SQL("DELETE FROM {0}.{1}").format(
                Identifier(self.datastore.schema), Identifier(self.counter_table)))


class StockCountProjection(Projection[CountingRecorder]):
    name = "benchstockcount"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:  # type: ignore[override]
        self.view.count(tracking)


@dataclass
class Measure:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def measure_stock(env: dict[str, str], first_id: int, target: int, time_box: float) -> Measure:
    """Runs the stock runner from the start of the log until `target` events are tracked or time is up."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    # Start from the beginning of the log: forget what an earlier run tracked.
    factory = InfrastructureFactory.construct(env=Environment(StockCountProjection.name, {**os.environ, **env}))
    factory.tracking_recorder(CountingRecorder).reset(LastMeter.name)
    factory.close()

    target_id = first_id - 1 + target  # tracking holds notification ids
    done_id = 0
    started = time.perf_counter()
    with ProjectionRunner(application_class=LastMeter, projection_class=StockCountProjection,
                          view_class=CountingRecorder, env=env) as runner:
        deadline = started + time_box
        while True:
            done_id = runner.view.max_tracking_id(LastMeter.name) or 0
            if done_id >= target_id or time.perf_counter() >= deadline:
                break
            runner.run_forever(timeout=0.05)  # returns at the timeout; re-raises a processing error
        elapsed = time.perf_counter() - started
    return Measure(max(done_id - (first_id - 1), 0), elapsed)


# -- (b) COPY ---------------------------------------------------------------


def measure_copy(url: str, schema: str) -> tuple[Measure, int]:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        size = 0
        statement = SQL("COPY (SELECT * FROM {}.{}) TO STDOUT").format(Identifier(schema), Identifier(EVENTS_TABLE))
        with cur.copy(statement) as copy:
            for data in copy:
                size += len(data)
        elapsed = time.perf_counter() - started
        rows = cur.rowcount
        if rows is None or rows < 0:
            rows = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()[0]
    return Measure(rows, elapsed), size


# -- (d) the floor of any Python projection ------------------------------------


def measure_decode_floor(backend: Backend, batch: int = 10_000) -> Measure:
    """Reading the log through the application's recorder and parsing each event's JSON, nothing else.

    No projection written in Python can be faster than this: it must read every event and parse it
    before it can fold it into anything. Compared with (b) it shows how much of the COPY speed a
    rebuild in Python can reach at all, on this machine, in this run.
    """
    recorder, loads = backend.lastmeter.recorder, json.loads
    started, events, start = time.perf_counter(), 0, 1
    while notifications := recorder.select_notifications(start, batch):
        for notification in notifications:
            loads(notification.state)
        events += len(notifications)
        start = notifications[-1].id + 1
    return Measure(events, time.perf_counter() - started)


# -- (c) our rebuild ----------------------------------------------------------


@dataclass
class RebuildRun:
    views: tuple[str, ...]
    log_events: int  # positions of the log read (each applied to every view of the run)
    seconds: float

    @property
    def view_events(self) -> Measure:
        """Events processed, counted once per view they were applied to (the sum over views)."""
        return Measure(self.log_events * len(self.views), self.seconds)

    @property
    def log(self) -> Measure:
        return Measure(self.log_events, self.seconds)


@dataclass
class RebuildResult:
    all_views: RebuildRun
    per_view: list[RebuildRun]
    rss_samples: list[tuple[str, int, int]]  # (run, log events into it, RSS kB)
    hwm_before_kb: int
    hwm_after_kb: int
    rss_before_kb: int
    hwm_was_reset: bool


def measure_rebuild(backend: Backend, batch_size: int | None, every: int = 100_000, per_view: bool = True,
                    profile: str | None = None) -> RebuildResult:
    """Rebuilds every view with the projector the API runs (ReadSide: the views' mapper, the backend's views).

    First all views together, in one pass, then, if asked, each view alone, to see what each costs.
    """
    projector = ReadSide(backend).projector  # ReadSide() creates missing views; its thread is not started
    if batch_size:
        projector.rebuild_batch_size = batch_size
    names = tuple(v.name for v in VIEWS)
    samples: list[tuple[str, int, int]] = []
    hwm_before = hwm_kb()
    was_reset = reset_hwm()
    rss_before = rss_kb()

    def run(label: str, views: tuple[str, ...], profiler: cProfile.Profile | None = None) -> RebuildRun:
        mark = [every]

        def progress(done: int, head: int) -> None:
            while done >= mark[0]:
                samples.append((label, mark[0], rss_kb()))
                print(f"    {label:<12} {mark[0]:>9,} events  RSS {samples[-1][2] / MB:7.1f} MB", flush=True)
                mark[0] += every

        started = time.perf_counter()
        if profiler:
            profiler.enable()
        done = projector.rebuild(list(views), progress)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        samples.append((label, done, rss_kb()))
        result = RebuildRun(views, done, elapsed)
        print(f"  rebuilt {label:<12} {done:>9,} log events x {len(views)} view(s) in {elapsed:7.2f} s = "
              f"{result.view_events.rate:>9,.0f} events/s ({result.log.rate:,.0f} log events/s)", flush=True)
        return result

    profiler = cProfile.Profile() if profile else None
    label = "all (1 pass)"
    all_views = run(label, names, profiler)
    if profiler and profile:
        profiler.dump_stats(profile)
    alone = [run(name, (name,)) for name in names] if per_view else []
    return RebuildResult(all_views, alone, samples, hwm_before, hwm_kb(), rss_before, was_reset)


def view_counts(url: str, schema: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(url) as conn:
        for view_cls in VIEWS:
            for table in view_cls.tables:
                name = f"view_{table.name}"
                counts[name] = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(Identifier(schema), Identifier(name))).fetchone()[0]
    return counts


@contextmanager
def keys_cached_for_the_seed() -> Iterator[None]:
    """Keeps every person's key in memory while seeding (nobody erases anyone meanwhile).

    The key ring caches a key for a second, so that another process's erasure
    is seen; a seed touches a person again minutes of seeding later, and would
    read the key back from the database for nearly every sealed event.
    """
    original = privacy.KEY_CACHE_SECONDS
    privacy.KEY_CACHE_SECONDS = float("inf")
    try:
        yield
    finally:
        privacy.KEY_CACHE_SECONDS = original


# -- the run ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("LASTMETER_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--cases", type=int, default=100_000, help="cases in the synthetic city (default 100000)")
    parser.add_argument("--reseed", action="store_true", help="drop this size's schema and seed afresh")
    parser.add_argument("--stock-events", type=int, default=20_000, help="log prefix the stock runner is timed on")
    parser.add_argument("--stock-seconds", type=float, default=60.0, help="time box of the stock runner")
    parser.add_argument("--skip-stock", action="store_true", help="skip (a), e.g. when profiling")
    parser.add_argument("--batch-size", type=int, default=None, help="Projector batch size (default: its own)")
    parser.add_argument("--no-per-view", action="store_true", help="skip rebuilding each view alone after all of them")
    parser.add_argument("--profile", metavar="PATH", help="cProfile the rebuild; write pstats to PATH, print the top")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    schema = f"bench_c{args.cases}"
    ensure_database(args.database_url)
    # A master key of the run's own: the seed's personal values are sealed for nobody to read back.
    settings = Settings(database_url=args.database_url, postgres_schema=schema, postgres_pool_size=4,
                        master_key=BENCH_MASTER_KEY)
    env = settings.eventsourcing_env()
    print(f"lastmeter rebuild benchmark: {args.cases:,} cases, schema {schema} of {urlsplit(args.database_url).path.lstrip('/')}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)

    # 1. seed (or reuse)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        if args.reseed:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
        events = seeded(conn, schema, args.cases)
        if events is None:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
            conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    backend = open_backend(settings)  # as the API opens it: sealing mapper, key ring, views, org tree
    seed_line: str
    if events is None:
        print("seeding ...", flush=True)
        started = time.perf_counter()
        with keys_cached_for_the_seed():
            stats = CitySeeder(backend.lastmeter, args.cases, seed=args.seed).run()
        elapsed = time.perf_counter() - started
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            events = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()[0]
            conn.execute(SQL("ANALYZE {}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE)))
            conn.execute(SQL("CREATE TABLE {}.{} (cases int NOT NULL, events bigint NOT NULL, seeded_at timestamptz NOT NULL DEFAULT now())")
                         .format(Identifier(schema), Identifier(SEED_TABLE)))
            conn.execute(SQL("INSERT INTO {}.{} (cases, events) VALUES (%s, %s)").format(Identifier(schema), Identifier(SEED_TABLE)),
                         (args.cases, events))
        top = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_type.items(), key=lambda kv: -kv[1])[:12])
        seed_line = (f"seeded {stats.cases:,} cases, {stats.clients:,} clients, {events:,} events in {elapsed:.1f} s "
                     f"({events / elapsed:,.0f} events/s; {stats.refused} commands refused)")
        print(seed_line)
        print(f"  events by type: {top}", flush=True)
    else:
        seed_line = f"reused seed: {args.cases:,} cases, {events:,} events"
        print(seed_line, flush=True)

    # 2a. stock runner
    stock: Measure | None = None
    if not args.skip_stock:
        target = min(args.stock_events, events)
        print(f"(a) stock ProjectionRunner, one transaction per event, first {target:,} events "
              f"(time box {args.stock_seconds:.0f} s) ...", flush=True)
        with psycopg.connect(args.database_url) as conn:
            first_id = conn.execute(SQL("SELECT min(notification_id) FROM {}.{}").format(
                Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()[0]
        stock = measure_stock(env, first_id, target, args.stock_seconds)
        print(f"    {stock.events:,} events in {stock.seconds:.2f} s = {stock.rate:,.0f} events/s", flush=True)

    # 2b. COPY
    print("(b) COPY (SELECT * FROM events) TO STDOUT ...", flush=True)
    copy, size = measure_copy(args.database_url, schema)
    print(f"    {copy.events:,} rows, {size / MB / MB:,.1f} MB in {copy.seconds:.2f} s = {copy.rate:,.0f} events/s", flush=True)

    # 2d. the floor
    print("(d) the floor: every event read through the recorder and its JSON parsed, nothing else ...", flush=True)
    floor = measure_decode_floor(backend)
    print(f"    {floor.events:,} events in {floor.seconds:.2f} s = {floor.rate:,.0f} events/s", flush=True)

    # 2c. our rebuild
    print(f"(c) Projector.rebuild() of every view ({', '.join(v.name for v in VIEWS)}) ...", flush=True)
    every = 100_000 if events >= 300_000 else max(5_000, events // 10)  # RSS samples: every 100k at full size
    result = measure_rebuild(backend, args.batch_size, every=every, per_view=not args.no_per_view, profile=args.profile)
    counts = view_counts(args.database_url, schema)
    backend.close()

    # 3. the table
    ours = result.all_views.view_events
    ours_log = result.all_views.log
    n = len(result.all_views.views)
    how = "one pass" if "1 pass" in (result.rss_samples[0][0] if result.rss_samples else "") else "one by one"
    rows: list[tuple[str, Measure | None]] = [
        ("(a) stock ProjectionRunner (1 tx/event)", stock),
        ("(b) COPY events TO STDOUT", copy),
        ("(d) floor: recorder read + json.loads", floor),
        (f"(c) all {n} views, {how}: events x views", ours),
        ("    same, log events", ours_log),
    ]
    rows += [(f"    {r.views[0]} alone", r.log) for r in result.per_view]
    print()
    print(f"{'figure':<46}{'events':>12}{'seconds':>10}{'events/s':>12}")
    print("-" * 80)
    for label, m in rows:
        if m is None:
            print(f"{label:<46}{'skipped':>12}")
        else:
            print(f"{label:<46}{m.events:>12,}{m.seconds:>10.2f}{m.rate:>12,.0f}")
    print("-" * 80)
    during = [kb for label, _, kb in result.rss_samples if label == result.rss_samples[0][0]]
    everything = [kb for _, _, kb in result.rss_samples]
    print(f"memory (this process and the fold's): RSS before rebuild {result.rss_before_kb / MB:.1f} MB; "
          f"all-views rebuild, every {every:,} events folded or read: "
          + " ".join(f"{kb / MB:.0f}" for kb in during) + " MB")
    print(f"        min {min(everything) / MB:.1f} / max {max(everything) / MB:.1f} MB over all {len(everything)} samples "
          f"(per-view runs included); this process's peak (VmHWM) during the rebuilds {result.hwm_after_kb / MB:.1f} MB"
          + (" (mark reset before them;" if result.hwm_was_reset else " (mark NOT reset;")
          + f" process peak before {result.hwm_before_kb / MB:.1f} MB)")
    print("views: " + ", ".join(f"{t} {c:,}" for t, c in counts.items()))
    print(seed_line)
    print()
    ok = True
    if stock is not None and stock.rate:
        ratio = ours.rate / stock.rate
        verdict = "PASS" if ratio >= 30 else "FAIL"
        ok &= verdict == "PASS"
        print(f"ours / stock = {ours.rate:,.0f} / {stock.rate:,.0f} = {ratio:,.1f}x   (target >= 30x)   {verdict}")
    else:
        print("ours / stock: not measured")
    ratio = ours.rate / copy.rate
    verdict = "PASS" if ratio >= 0.25 else "FAIL"
    ok &= verdict == "PASS"
    print(f"ours / COPY  = {ours.rate:,.0f} / {copy.rate:,.0f} = {ratio:.3f}x   (target >= 0.25x)   {verdict}")
    print(f"  ('ours' counts each event once per view, {n} views; counting log events once instead: "
          f"ours/stock {(ours_log.rate / stock.rate) if stock and stock.rate else float('nan'):,.1f}x, "
          f"ours/COPY {ours_log.rate / copy.rate:.3f}x)")
    print(f"floor / COPY = {floor.rate:,.0f} / {copy.rate:,.0f} = {floor.rate / copy.rate:.3f}x   (the most a projection "
          f"in Python could reach, one core; ours is {ours_log.rate / floor.rate:.2f}x the floor per log event)")
    print(f"load average now {os.getloadavg()[0]:.2f}")

    if args.profile:
        print(f"\nprofile of the rebuild written to {args.profile}; top functions by own time:")
        stats = pstats.Stats(args.profile)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(30)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
