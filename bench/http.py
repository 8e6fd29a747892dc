"""HTTP benchmark: 32 concurrent clients against `lastmeter serve` on PostgreSQL, a floor and a trivial endpoint.

One run:

1. starts `lastmeter serve` as a process on a fresh PostgreSQL schema (dropped at the end), with a
   master key of its own; makes --users case-worker tokens with `lastmeter tokens create` (the
   clients share them round robin); seeds clients and cases over HTTP;
2. runs --clients concurrent HTTP clients (threads, each a keep-alive `Session`: see its docstring) for
   --seconds: 70% commands (a note or an assignment on an existing case), 20% case reads
   (GET /v1/cases/{id}), 10% opens (POST /v1/cases); meanwhile one more client, not counted,
   measures save-to-visible lag: for every command answered it polls GET /v1/projections, back to
   back, until every view's position is at least the command's X-Position (the lag counted is up
   to the poll's *answer*, an upper bound; the target is judged on it); a second prober reads the
   views' positions straight from PostgreSQL every 2 ms, the lag without the API's own latency;
   then drives the same mix at a steady half of the throughput it measured, for --paced-seconds:
   the latency a case worker sees when the server is not saturated (no target; with 32 clients
   back to back, latency is bound to be 32 / throughput on average, whatever the server does);
3. starts `python -m uvicorn bench.floor_app:app` (the floor: the same routes, each one round trip to
   PostgreSQL and nothing else, on tables of the same schema) and drives the same mix against it;
   then `python -m uvicorn bench.trivial_app:app`, one GET; both with the same server settings
   (host, workers, log level), the same number of clients and the same time;
4. prints throughput, p50/p99 latency (all requests and per kind), the lag, the CPU used by the
   load generator, the server (with its projector process; also per request) and the whole machine,
   and the ratios: throughput vs the trivial endpoint (target >= 0.4x), p99 (target < 100 ms), lag
   p99 (target < 250 ms), PASS or FAIL; and, without a target, the floor against the trivial endpoint
   (what the stack leaves any server that commits each command) and ours against the floor.

    .venv/bin/python -m bench.http                     # 20 s each
    .venv/bin/python -m bench.http --seconds 60        # longer
    .venv/bin/python -m bench.http --keep-server-log   # print where the server logs went
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: the repository, not bench/ (whose http.py shadows the stdlib's)
    sys.path[0] = str(ROOT)

import argparse
import base64
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg
from psycopg.sql import SQL, Identifier

from bench import percentile, verdict
from tests.helpers import client_body, free_port

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
UNIT = "350502"
BIN = Path(sys.executable).parent / "lastmeter"
if not BIN.exists():
    BIN = ROOT / ".venv" / "bin" / "lastmeter"
START_TIMEOUT = 30.0


# -- processes --------------------------------------------------------------------------------


def store_env(url: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LASTMETER_")}
    env.update(LASTMETER_DATABASE_URL=url, LASTMETER_POSTGRES_SCHEMA=schema,
               LASTMETER_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
               PYTHONUNBUFFERED="1", TERM="dumb", COLUMNS="250")
    return env


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    base_url: str
    log: Path
    ready_path: str

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def serving(name: str, argv: list[str], env: dict[str, str], cwd: Path, log: Path, port: int,
            ready_path: str) -> Iterator[Server]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, process, f"http://127.0.0.1:{port}", log, ready_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.output()}")
            try:
                with Session(server.base_url, timeout=1) as session:
                    if session.get(ready_path).status_code == 200:
                        break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {START_TIMEOUT:.0f} s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def token(env: dict[str, str], cwd: Path, user: str) -> str:
    done = subprocess.run([str(BIN), "tokens", "create", "--user", user, "--role", "case_worker", "--org-unit", UNIT],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"tokens create failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1].strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants (uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += children.get(current, [])
    return total


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- the clients' HTTP ------------------------------------------------------------------------


@dataclass
class Answer:
    status_code: int
    headers: http.client.HTTPMessage  # case-insensitive, like any HTTP client's
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.content[:300]!r}")


class Session:
    """One keep-alive HTTP/1.1 connection, on the standard library's http.client.

    The load generator shares the machine's two cores with the server it measures, so what it spends
    per request is taken from the server. httpx spent 1.66 ms of CPU per request here, http.client
    0.25 ms (32 threads against the trivial endpoint: 640 against 1,350 req/s, the generator's own
    interpreter lock the limit with httpx). With httpx the trivial endpoint measured the load generator.

    A connection idle for longer than the server keeps one (uvicorn: 5 s) is dropped before it is
    used again, as httpx does, rather than failing the request sent on it.
    """

    IDLE = 4.0  # seconds

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, timeout: float = 30.0):
        url = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        self.headers = dict(headers or {})
        self.used = time.monotonic()

    def request(self, method: str, path: str, document: Any = None) -> Answer:
        headers, body = self.headers, None
        if document is not None:
            body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
            headers = {**headers, "Content-Type": "application/json"}
        if time.monotonic() - self.used > self.IDLE:
            self.connection.close()  # the server may have closed it: http.client opens a new one
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        except (OSError, http.client.HTTPException):
            self.connection.close()  # the next request opens a new connection
            raise
        finally:
            self.used = time.monotonic()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, document: Any) -> Answer:
        return self.request("POST", path, document)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """What the clients of one phase did in the measured window."""

    label: str
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind → seconds
    statuses: Counter = field(default_factory=Counter)  # (kind, status) → count, whole run
    errors: list[str] = field(default_factory=list)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    machine_busy: float = 0.0  # of all CPUs, 0..1
    window: tuple[float, float] = (0.0, 0.0)  # perf_counter() from, to
    lateness: list[float] = field(default_factory=list)  # paced: seconds each request was sent after it was due

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def all_latencies(self) -> list[float]:
        return [x for v in self.latencies.values() for x in v]


def drive(label: str, server: Server, clients: int, seconds: float, warmup: float,
          make_op: Callable[[int, Session], Callable[[], tuple[str, Answer]]],
          users: list[dict[str, str]], probers: tuple[Callable[[threading.Event], None], ...] = (),
          pace: float | None = None) -> Load:
    """Runs `clients` threads, each doing `op()` back to back as one of `users` (round robin);
    measures the requests answered inside the window.

    With `pace`, each client sends a request every `pace` seconds instead (the clients staggered
    evenly), and a request's latency runs from when it was due: a client still waiting on its last
    answer is late, and its lateness counts (no coordinated omission)."""
    load = Load(label)
    sessions = [Session(server.base_url, users[i % len(users)]) for i in range(clients)]
    for session in sessions:  # the connections open before the clock starts
        session.get(server.ready_path)
    ops = [make_op(i, s) for i, s in enumerate(sessions)]
    records: list[list[tuple[str, int, float, float]]] = [[] for _ in range(clients)]
    late: list[list[float]] = [[] for _ in range(clients)]  # paced: how long after it was due each was sent
    start = threading.Barrier(clients + 1)
    clock: dict[str, float] = {}
    stop_probe = threading.Event()

    def loop(i: int) -> None:
        done = records[i]
        start.wait()
        due = clock["start"] + (pace or 0.0) * i / clients
        while (time.perf_counter() if pace is None else due) < clock["end"]:
            if pace is None:
                began = time.perf_counter()
            else:
                time.sleep(max(0.0, due - time.perf_counter()))
                began, due = due, due + pace
                late[i].append(time.perf_counter() - began)
            try:
                kind, response = ops[i]()
            except Exception as error:  # a failed request is counted, the client goes on
                load.errors.append(f"{type(error).__name__}: {error}")
                kind, status = "error", 0
            else:
                status = response.status_code
            finished = time.perf_counter()
            # counted in the window it ended in; a paced request in the one it was due in (however late)
            done.append((kind, status, finished if pace is None else began, finished - began))

    threads = [threading.Thread(target=loop, args=(i,), name=f"{label}-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    probes = [threading.Thread(target=p, args=(stop_probe,), name=f"prober-{n}") for n, p in enumerate(probers)]
    for t in probes:
        t.start()
    now = time.perf_counter()
    clock["start"], clock["from"], clock["end"] = now, now + warmup, now + warmup + seconds
    start.wait()
    time.sleep(max(0.0, clock["from"] - time.perf_counter()))
    cpu0, server0, (busy0, total0) = time.process_time(), cpu_seconds(server.process.pid), machine_busy()
    time.sleep(max(0.0, clock["end"] - time.perf_counter()))
    cpu1, server1, (busy1, total1) = time.process_time(), cpu_seconds(server.process.pid), machine_busy()
    for t in threads:
        t.join()
    stop_probe.set()
    for t in probes:
        t.join()
    for session in sessions:
        session.close()
    load.seconds = clock["end"] - clock["from"]
    load.window = (clock["from"], clock["end"])
    load.client_cpu, load.server_cpu = cpu1 - cpu0, server1 - server0
    load.machine_busy = (busy1 - busy0) / max(total1 - total0, 1)
    load.lateness = [x for times in late for x in times]
    for done in records:
        for kind, status, at, latency in done:
            load.statuses[(kind, status)] += 1
            if clock["from"] <= at <= clock["end"]:
                load.latencies.setdefault(kind, []).append(latency)
    return load


class LagProbe:
    """Resolves every command answered once every view has reached its X-Position, polling back to back.

    `look(session)` answers the lowest view position; the lag counted runs from the command's answer
    to the answer of the first poll that shows it (an upper bound: a poll takes time too).
    """

    def __init__(self, name: str, look: Callable[[Any], int], open_session: Callable[[], Any], pause: float = 0.0):
        self.name, self.look, self.open_session, self.pause = name, look, open_session, pause
        self.pending: list[tuple[int, float]] = []  # (position, answered at)
        self.lock = threading.Lock()
        self.lags: list[tuple[float, float]] = []  # (answered at, lag)
        self.polls = 0
        self.errors: list[str] = []

    def answered(self, position: int, at: float) -> None:
        with self.lock:
            self.pending.append((position, at))

    def run(self, stop: threading.Event, drain: float = 10.0) -> None:
        """Polls until `stop`, then on until what is pending is seen (at most `drain` seconds more)."""
        deadline = None
        with self.open_session() as session:
            while True:
                if stop.is_set() and deadline is None:
                    deadline = time.perf_counter() + drain
                with self.lock:
                    waiting = bool(self.pending)
                if deadline is not None and (not waiting or time.perf_counter() > deadline):
                    return
                if not waiting:
                    time.sleep(0.001)
                    continue
                try:
                    visible = self.look(session)
                    seen = time.perf_counter()
                except Exception as error:
                    self.errors.append(f"{type(error).__name__}: {error}")
                    time.sleep(0.01)
                    continue
                self.polls += 1
                with self.lock:
                    still = []
                    for position, at in self.pending:
                        if position <= visible:
                            self.lags.append((at, seen - at))
                        else:
                            still.append((position, at))
                    self.pending = still
                if self.pause:
                    time.sleep(self.pause)


def http_probe(server: Server, headers: dict[str, str]) -> LagProbe:
    def look(http: Session) -> int:
        response = http.get("/v1/projections")
        response.raise_for_status()
        return min(item["position"] for item in response.json()["items"])

    return LagProbe("GET /v1/projections", look,
                    lambda: Session(server.base_url, headers))


def db_probe(url: str, schema: str) -> LagProbe:
    statement = SQL("SELECT min(position) FROM {}").format(Identifier(schema, "projection_positions"))

    def look(conn: psycopg.Connection) -> int:
        return conn.execute(statement).fetchone()[0] or 0

    return LagProbe("projection_positions (SQL)", look, lambda: psycopg.connect(url, autocommit=True), pause=0.002)


def lastmeter_ops(cases: list[str], clients_ids: list[str], probes: list[LagProbe], phase: str):
    """The mix: 70% commands (half notes, half assignments), 20% case reads, 10% opens; each phase's
    clients draw numbers of their own (a fresh assignee is never one an earlier phase gave)."""

    def make_op(i: int, http: Session) -> Callable[[], tuple[str, Answer]]:
        rng = random.Random(f"{phase}-{i}")

        def op() -> tuple[str, Answer]:
            roll = rng.random()
            case_id = cases[rng.randrange(len(cases))]
            if roll < 0.70:
                if rng.random() < 0.5:
                    kind, response = "note", http.post(f"/v1/cases/{case_id}/notes", {"text": "电话回访，本人情况稳定"})
                else:  # a fresh assignee each time: the command always appends
                    kind, response = "assign", http.post(f"/v1/cases/{case_id}/assignment",
                                                         {"assignee": f"w{rng.randrange(10 ** 9)}"})
                if response.status_code == 200:
                    answered = time.perf_counter()
                    for probe in probes:
                        probe.answered(int(response.headers["X-Position"]), answered)
                return kind, response
            if roll < 0.90:
                return "read", http.get(f"/v1/cases/{case_id}")
            response = http.post("/v1/cases", {"kind": "home_care", "client_id": rng.choice(clients_ids),
                                               "org_unit": UNIT, "need": "希望得到居家托养服务"})
            if response.status_code == 201:
                cases.append(response.json()["id"])
            return "open", response

        return op

    return make_op


def trivial_ops(i: int, http: Session) -> Callable[[], tuple[str, Answer]]:
    return lambda: ("trivial", http.get("/"))


def seed(server: Server, headers: dict[str, str], clients: int, cases: int) -> tuple[list[str], list[str]]:
    """Registers clients and opens cases over HTTP, a few requests at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def register(_: int) -> str:
        with Session(server.base_url, headers) as http:
            response = http.post("/v1/clients", client_body(UNIT))
            response.raise_for_status()
            return response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        client_ids = list(pool.map(register, range(clients)))

    def open_some(n: int) -> list[str]:
        opened = []
        with Session(server.base_url, headers) as http:
            for k in range(n, cases, 8):
                response = http.post("/v1/cases", {"kind": "home_care", "client_id": client_ids[k % len(client_ids)],
                                                   "org_unit": UNIT, "need": "bench"})
                response.raise_for_status()
                opened.append(response.json()["id"])
        return opened

    with ThreadPoolExecutor(8) as pool:
        case_ids = [c for part in pool.map(open_some, range(8)) for c in part]
    return client_ids, case_ids


def uvicorn_serving(app: str, args, env: dict[str, str], workdir: Path, ready_path: str):
    """`python -m uvicorn bench.<app>:app`, with the settings lastmeter is served with (host, workers,
    log level)."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"bench.{app}:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(args.workers), "--log-level", "info"]
    print(f"{app} (python -m uvicorn bench.{app}:app) ...", flush=True)
    return serving(app, argv, env, ROOT, workdir / f"{app}.log", port, ready_path)


def drive_floor(args, env: dict[str, str], workdir: Path, schema: str, users: list[dict[str, str]],
                client_ids: list[str], case_ids: list[str]) -> Load:
    """The same mix against bench.floor_app: one round trip to PostgreSQL a request, nothing else."""
    from bench.floor_app import create_tables

    with psycopg.connect(args.database_url, autocommit=True) as conn:
        create_tables(conn, schema, case_ids)
    secrets = [user["Authorization"].removeprefix("Bearer ") for user in users]
    floor_env = dict(env, BENCH_FLOOR_DATABASE_URL=args.database_url, BENCH_FLOOR_SCHEMA=schema,
                     BENCH_FLOOR_TOKENS=",".join(secrets))
    with uvicorn_serving("floor_app", args, floor_env, workdir, "/healthz") as server:
        return drive("floor", server, args.clients, args.seconds, args.warmup,
                     lastmeter_ops(case_ids, client_ids, [], "floor"), users)


# -- the run ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def print_load(load: Load) -> None:
    everything = load.all_latencies()
    print(f"  {load.label + ' (all)':<22}{len(everything):>9,}{load.rate:>10,.0f}{ms(percentile(everything, 50)):>9}"
          f"{ms(percentile(everything, 99)):>9}{ms(max(everything) if everything else float('nan')):>9}")
    if len(load.latencies) > 1:
        for kind, values in sorted(load.latencies.items()):
            print(f"    {kind:<20}{len(values):>9,}{len(values) / load.seconds:>10,.0f}{ms(percentile(values, 50)):>9}"
                  f"{ms(percentile(values, 99)):>9}{ms(max(values)):>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("LASTMETER_BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients (default 32)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per server (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers, both servers (default 1)")
    parser.add_argument("--users", type=int, default=8,
                        help="case workers (one token each) the clients share round robin (default 8)")
    parser.add_argument("--seed-clients", type=int, default=32)
    parser.add_argument("--seed-cases", type=int, default=256)
    parser.add_argument("--keep-server-log", action="store_true", help="keep the servers' logs and print where")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-trivial", action="store_true")
    parser.add_argument("--paced-seconds", type=float, default=10.0,
                        help="then, seconds at a steady half of the throughput measured (0: skip; default 10)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="bench-http-"))
    schema = f"bench_http_{uuid.uuid4().hex[:8]}"
    print(f"lastmeter HTTP benchmark: {args.clients} clients, {args.seconds:g} s (+{args.warmup:g} s warm-up) per server, "
          f"{args.workers} worker(s), {args.users} users; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
    ok = True
    try:
        env = store_env(args.database_url, schema)
        port = free_port()
        serve = [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
        with serving("lastmeter serve", serve, env, workdir, workdir / "lastmeter.log", port, "/healthz") as server:
            print(f"lastmeter serve up (schema {schema}); making {args.users} tokens, seeding "
                  f"{args.seed_clients} clients and {args.seed_cases} cases ...", flush=True)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(4) as pool:  # each `tokens create` is a process of its own
                secrets = list(pool.map(lambda user: token(env, workdir, user),
                                        [f"bench-worker-{n}" for n in range(max(1, args.users))] + ["bench-prober"]))
            users = [{"Authorization": f"Bearer {secret}"} for secret in secrets[:-1]]
            headers, probe_headers = users[0], {"Authorization": f"Bearer {secrets[-1]}"}
            started = time.perf_counter()
            client_ids, case_ids = seed(server, headers, args.seed_clients, args.seed_cases)
            print(f"  seeded in {time.perf_counter() - started:.1f} s; running the mix ...", flush=True)
            probes = [http_probe(server, probe_headers), db_probe(args.database_url, schema)]
            ours = drive("lastmeter", server, args.clients, args.seconds, args.warmup,
                         lastmeter_ops(case_ids, client_ids, probes, "closed"), users, tuple(p.run for p in probes))
            for probe in probes:
                ours.errors += [f"prober {probe.name}: {e}" for e in probe.errors[:3]]
            paced = None
            if args.paced_seconds > 0 and ours.rate > 0:
                print(f"  the same mix at a steady {ours.rate / 2:,.0f} req/s ...", flush=True)
                paced = drive("lastmeter, paced", server, args.clients, args.paced_seconds, 1.0,
                              lastmeter_ops(case_ids, client_ids, [], "paced"), users, pace=2 * args.clients / ours.rate)
        floor = None
        if not args.skip_floor:
            floor = drive_floor(args, env, workdir, schema, users, client_ids, case_ids)
        trivial = None
        if not args.skip_trivial:
            with uvicorn_serving("trivial_app", args, env, workdir, "/") as server:
                trivial = drive("trivial", server, args.clients, args.seconds, args.warmup, trivial_ops, [{}])
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(schema)))
        if args.keep_server_log:
            print(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"  {'':<22}{'requests':>9}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print("  " + "-" * 66)
    print_load(ours)
    if paced:
        print_load(paced)
    for load in (floor, trivial):
        if load:
            print_load(load)
    print("  " + "-" * 66)
    for load in (ours, paced, floor, trivial):
        if load is None:
            continue
        odd = {f"{k} {s}": n for (k, s), n in sorted(load.statuses.items()) if s not in (200, 201)}
        uncounted = ", the lag prober's polls among the server's load" if load is ours else ""
        print(f"  {load.label}: CPU in the window: load generator {load.client_cpu:.1f} s, server {load.server_cpu:.1f} s "
              f"of {load.seconds:.1f} s ({load.server_cpu / max(load.requests, 1) * 1000:.2f} ms a request counted"
              f"{uncounted}); machine {load.machine_busy:.0%} busy; unexpected answers {odd or 'none'}")
        for error in load.errors[:5]:
            print(f"    {error}")
        ok &= not odd and not load.errors
    lag_p99 = float("nan")
    for probe in probes:
        lags = [lag for at, lag in probe.lags if ours.window[0] <= at <= ours.window[1]]
        print(f"  save-to-visible lag, polling {probe.name}: {len(lags):,} commands, p50 {ms(percentile(lags, 50))} ms, "
              f"p99 {ms(percentile(lags, 99))} ms, max {ms(max(lags) if lags else float('nan'))} ms "
              f"({probe.polls:,} polls; {len(probe.pending)} never seen)")
        if probe is probes[0]:
            lag_p99 = percentile(lags, 99)
            ok &= not probe.pending
    print()
    p99 = percentile(ours.all_latencies(), 99)
    if trivial and trivial.rate:
        ratio = ours.rate / trivial.rate
        ok &= ratio >= 0.4
        print(f"throughput / trivial = {ours.rate:,.0f} / {trivial.rate:,.0f} req/s = {ratio:.2f}x   "
              f"(target >= 0.4x)   {verdict(ratio >= 0.4)}")
    ok &= p99 < 0.100
    print(f"p99 latency          = {ms(p99)} ms   (target < 100 ms)   {verdict(p99 < 0.100)}")
    ok &= lag_p99 < 0.250
    print(f"lag p99              = {ms(lag_p99)} ms   (target < 250 ms, polling the API)   {verdict(lag_p99 < 0.250)}")
    if floor and floor.rate and trivial and trivial.rate:  # no target: what the stack leaves any server
        print(f"floor / trivial      = {floor.rate:,.0f} / {trivial.rate:,.0f} req/s = {floor.rate / trivial.rate:.2f}x, "
              f"ours / floor = {ours.rate / floor.rate:.2f}x   (no target)")
    if paced:  # no target: what a case worker waits when the server is not saturated
        print(f"at a steady half of that throughput ({paced.rate:,.0f} req/s): p50 "
              f"{ms(percentile(paced.all_latencies(), 50))} ms, p99 {ms(percentile(paced.all_latencies(), 99))} ms "
              f"from when each was due (the load generator sent them p99 {ms(percentile(paced.lateness, 99))} ms "
              "late)   (no target)")
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
