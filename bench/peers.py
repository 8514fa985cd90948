"""Peers benchmark: tenure beside Huey (SqliteHuey) and RQ (Redis) in the same run, same task bodies.

    make bench-peers                                   # builds .venv and .venv-bench, then runs this
    .venv-bench/bin/python bench/peers.py [--quick] [--only tenure --only huey ...]

Runs under .venv-bench (Huey, RQ: benchmark-only, never tenure's dependencies); tenure's side runs
in .venv/bin/python (this file's hidden `--submit` mode). Workers: `tenure worker` (SQLite, default
concurrency 64), `huey_consumer -k thread -w 4` (SQLite in WAL with synchronous=NORMAL, as tenure's),
`rq worker --worker-class rq.SimpleWorker` (Redis at BENCH_REDIS, default db 13, flushed).
Each measurement gets a fresh database. Measured, per system:

1. N no-op tasks (default 5,000) submitted one by one to a running, warmed-up worker: tasks/s
   from the first submit to the last finished (a poll every 5 ms sees it);
2. the same N submitted first, then the worker started: tasks/s from worker start to the last
   finished; for tenure also the N as one `submit_run`;
3. during row 1: the slowest and the p99 single submit;
4. 50 tasks of 1-3 s (the same 50 durations for all, from random.Random(7)): run end minus
   the submit start minus the longest task (the overhead), right after the worker is ready and
   after it sat idle BENCH_IDLE_S (default 30 s). Every system gets 50-way concurrency here
   (Huey -w 50, `rq worker-pool -n 50`), else the row would measure worker count, not overhead;
5. worker start to the first finished task, one task queued before the start.

No-op: a function returning None (tenure: the built-in `echo` with {}). Sleep: time.sleep
(tenure: `sleep`, one explicit run, per-task args pinning each duration). BENCH_REPEATS (default
3) repeats, interleaved; medians printed. `--quick`: 1 repeat, 1,000 tasks, idle 5 s.
Prints figures; asserts nothing about speed (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TENURE_PY = str(REPO / ".venv" / "bin" / "python")
BENCH_BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/13")
QUEUE = "peers"
POLL_S = 0.005
WIDE = 50  # concurrency for row 4: one slot per task
_rng = random.Random(7)
SLEEPS = [round(_rng.uniform(1, 3), 3) for _ in range(50)]
LIVE: list[subprocess.Popen[str]] = []

PEER_TASKS = '''"""Task bodies for Huey and RQ (written by bench/peers.py)."""
import os
import time

def noop():
    return None

def pause(seconds):
    time.sleep(seconds)

if os.environ.get("PEERS_HUEY_DB"):
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # tenure's SQLite settings: WAL, synchronous=NORMAL
        def _create_connection(self):
            conn = super()._create_connection()
            conn.execute("pragma synchronous=1")
            return conn

    huey = type("Huey", (SqliteHuey,), {"storage_class": Storage})(
        "peers", filename=os.environ["PEERS_HUEY_DB"], store_none=True)  # store_none: a result row per task
    h_noop = huey.task(name="noop")(noop)
    h_pause = huey.task(name="pause")(pause)
'''


# -- the submitting side, one process per measurement (tenure's in tenure's own venv) ----------

def submit_part(system: str, moddir: str, d: str, how: str, n: int, warm: bool) -> None:
    """Submit n tasks `how` (one | run | sleep); print timings as JSON. `warm`: one untimed no-op first."""
    ops: dict[str, Callable[[], Any]]
    if system == "tenure":
        import service
        t = service.open(str(Path(d) / "t.db"), migrate=False)
        args = [{"min_seconds": s, "max_seconds": s, "failure_rate": 0, "transient_rate": 0, "seed": 7,
                 "position": i} for i, s in enumerate(SLEEPS)]
        ops = {"one": lambda: t.submit_task("echo", {}), "run": lambda: t.submit_run("echo", [{}] * n),
               "sleep": lambda: t.submit_run("sleep", args)}
    elif system == "huey":
        sys.path.insert(0, moddir)
        import peer_tasks  # type: ignore[import-not-found, unused-ignore]
        peer_tasks.huey.pending_count()  # opens the connection
        ops = {"one": peer_tasks.h_noop, "sleep": lambda: [peer_tasks.h_pause(s) for s in SLEEPS] and None}
    else:
        from redis import Redis
        from rq import Queue
        q = Queue(QUEUE, connection=Redis.from_url(REDIS_URL))
        q.count  # noqa: B018  (opens the connection)
        ops = {"one": lambda: q.enqueue("peer_tasks.noop"),
               "sleep": lambda: [q.enqueue("peer_tasks.pause", s).id for s in SLEEPS]}
    if warm:
        ops["one"]()
        print("ready", flush=True)
        sys.stdin.readline()
    lat: list[float] = []
    ref = None
    t0 = time.time()
    if how == "one":
        for _ in range(n):
            a = time.perf_counter()
            ops["one"]()
            lat.append(time.perf_counter() - a)
    else:
        ref = ops[how]()
    t1 = time.time()
    ms = sorted(x * 1000 for x in lat) or [0.0]
    print(json.dumps({"t0": t0, "t1": t1, "max_ms": ms[-1], "p99_ms": ms[int(0.99 * (len(ms) - 1))], "ref": ref}))


# -- the systems, seen from the harness -------------------------------------------------------

class Peer:
    name = ""
    python = sys.executable

    def __init__(self, moddir: Path) -> None:
        self.moddir = moddir
        self.dir = moddir
        self.env: dict[str, str] = {}

    def prepare(self, d: Path) -> None:
        """A fresh, empty store in d for the next measurement."""

    def worker_cmd(self, wide: bool) -> list[str]:
        """The worker's command; `wide`: 50-way concurrency (row 4)."""
        raise NotImplementedError

    def finished(self) -> int:
        """How many tasks have finished so far (polled)."""
        raise NotImplementedError

    def settle(self, wide: bool, worker: subprocess.Popen[str]) -> None:
        """Wait until every worker process is registered (RQ's pool), before the warm-up task."""

    def recorded_end(self, ref: Any) -> float | None:
        """The system's own timestamp of the last task of a sleep submission (epoch s), if it keeps one."""
        return None


class Tenure(Peer):
    name, python = "tenure", TENURE_PY
    conn: sqlite3.Connection

    def prepare(self, d: Path) -> None:
        self.dir, self.db = d, d / "t.db"
        if hasattr(self, "conn"):
            self.conn.close()
        subprocess.run([TENURE_PY, "-c", "import service, sys; service.open(sys.argv[1]).close()",
                        f"sqlite:///{self.db}"], check=True, cwd=REPO)
        self.conn = sqlite3.connect(self.db, isolation_level=None, timeout=30)

    def worker_cmd(self, wide: bool) -> list[str]:
        return [TENURE_PY, "-m", "service", "worker", "--db", str(self.db), "--log-level", "WARNING"]

    def finished(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM tasks WHERE status = 'succeeded'").fetchone()[0])

    def recorded_end(self, ref: Any) -> float | None:
        end = self.conn.execute("SELECT finished_at FROM runs WHERE id = ?", (ref,)).fetchone()[0]
        return datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp()


class Huey(Peer):
    name = "huey"
    conn: sqlite3.Connection

    def prepare(self, d: Path) -> None:
        self.dir, db = d, d / "huey.db"
        if hasattr(self, "conn"):
            self.conn.close()
        self.env = {"PEERS_HUEY_DB": str(db), "PYTHONPATH": str(self.moddir)}
        subprocess.run([sys.executable, "-c", "import peer_tasks"], check=True, env={**os.environ, **self.env})
        self.conn = sqlite3.connect(db, isolation_level=None, timeout=30)

    def worker_cmd(self, wide: bool) -> list[str]:
        return [str(BENCH_BIN / "huey_consumer"), "peer_tasks.huey", "-k", "thread", "-w", str(WIDE if wide else 4),
                "-q"]

    def finished(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM kv").fetchone()[0])  # one result per task


class RQ(Peer):
    name = "rq"

    def prepare(self, d: Path) -> None:
        from redis import Redis
        self.dir, self.redis = d, Redis.from_url(REDIS_URL)
        self.redis.flushdb()

    def worker_cmd(self, wide: bool) -> list[str]:
        head = ["worker-pool", "-n", str(WIDE)] if wide else ["worker"]
        return [str(BENCH_BIN / "rq"), *head, "--url", REDIS_URL, "--worker-class", "rq.SimpleWorker",
                "--path", str(self.moddir), "-q", QUEUE]

    def finished(self) -> int:
        from rq.registry import FinishedJobRegistry
        return int(FinishedJobRegistry(QUEUE, connection=self.redis).get_job_count(cleanup=False))

    def settle(self, wide: bool, worker: subprocess.Popen[str]) -> None:
        from rq import Worker
        until = time.monotonic() + 120
        while Worker.count(connection=self.redis) < (WIDE if wide else 1):
            if worker.poll() is not None or time.monotonic() > until:
                raise RuntimeError(f"rq: workers not registered\n{(self.dir / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def recorded_end(self, ref: Any) -> float | None:
        from rq.job import Job
        ends = [j.ended_at for j in Job.fetch_many(ref, connection=self.redis) if j and j.ended_at]
        return float(max(e if e.tzinfo else e.replace(tzinfo=UTC) for e in ends).timestamp())


# -- processes and polls ----------------------------------------------------------------------

def spawn(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[str]:
    """A worker (output to `log`) or a submitter (stdin and stdout piped); in a session of its own."""
    with open(log or os.devnull, "a") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, text=True, start_new_session=True,
                                stdin=subprocess.DEVNULL if log else subprocess.PIPE,
                                stdout=out if log else subprocess.PIPE, stderr=out if log else None)
    LIVE.append(proc)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, a graceful wait, then SIGKILL to whatever is left of its process group."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc in LIVE:
        LIVE.remove(proc)


def submitter(p: Peer, how: str, n: int, warm: bool = False) -> subprocess.Popen[str]:
    cmd = [p.python, str(Path(__file__).resolve()), "--submit", p.name, str(p.moddir), str(p.dir), how, str(n)]
    return spawn([*cmd, "--warm"] if warm else cmd, p.env)


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    LIVE.remove(proc)
    if proc.returncode:
        raise RuntimeError(f"submitter exited {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def wait_count(p: Peer, target: int, worker: subprocess.Popen[str], timeout_s: float = 600) -> float:
    """Epoch time when p.finished() was first seen >= target (polled every POLL_S)."""
    until = time.monotonic() + timeout_s
    while p.finished() < target:
        if worker.poll() is not None or time.monotonic() > until:
            log = (p.dir / "worker.log").read_text()[-2000:]
            raise RuntimeError(f"{p.name}: {p.finished()}/{target} finished, worker rc {worker.poll()}\n{log}")
        time.sleep(POLL_S)
    return time.time()


def warmed(p: Peer, how: str, n: int, worker: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """A submitter that has had one no-op run by `worker` and now submits: the worker is ready."""
    p.settle(how == "sleep", worker)
    base = p.finished()
    sub = submitter(p, how, n, warm=True)
    assert sub.stdout is not None and sub.stdin is not None
    if sub.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{p.name}: submitter failed")
    wait_count(p, base + 1, worker)
    sub.stdin.write("go\n")
    sub.stdin.flush()
    return sub


# -- the rows ---------------------------------------------------------------------------------

@contextlib.contextmanager
def running(p: Peer, wide: bool = False) -> Iterator[tuple[subprocess.Popen[str], float]]:
    """p's worker, started now; yields it and its start time (epoch s), stops it after."""
    begin = time.time()
    worker = spawn(p.worker_cmd(wide), p.env, p.dir / "worker.log")
    try:
        yield worker, begin
    finally:
        stop(worker)


def row_live(p: Peer, n: int) -> dict[str, float]:
    with running(p) as (worker, _):
        sub = warmed(p, "one", n, worker)
        end = wait_count(p, n + 1, worker)
        r = result(sub)
    return {"live": n / (end - r["t0"]), "max_ms": r["max_ms"], "p99_ms": r["p99_ms"]}


def row_queued(p: Peer, n: int, how: str = "one") -> dict[str, float]:
    r = result(submitter(p, how, n))
    with running(p) as (worker, begin):
        rate = n / (wait_count(p, n, worker) - begin)
    return {"queued": rate, "submit": n / (r["t1"] - r["t0"])} if how == "one" else {"run": rate}


def row_run(p: Peer, n: int) -> dict[str, float]:
    return row_queued(p, n, "run")


def row_first(p: Peer, _n: int) -> dict[str, float]:
    result(submitter(p, "one", 1))
    with running(p) as (worker, begin):
        return {"first": wait_count(p, 1, worker) - begin}


def sleep_run(p: Peer, worker: subprocess.Popen[str], warm: bool) -> dict[str, float]:
    base = p.finished() + (1 if warm else 0)
    sub = warmed(p, "sleep", len(SLEEPS), worker) if warm else submitter(p, "sleep", len(SLEEPS))
    polled = wait_count(p, base + len(SLEEPS), worker)
    r = result(sub)
    recorded = p.recorded_end(r["ref"])
    return {"rec": (recorded or polled) - r["t0"] - max(SLEEPS), "poll": polled - r["t0"] - max(SLEEPS)}


def row_sleeps(peers: list[Peer], fresh: Callable[[], Path], idle_s: float) -> dict[str, dict[str, float]]:
    """A run on each worker in turn once it is ready (the others wait), then each again once it idled idle_s."""
    out: dict[str, dict[str, float]] = {}
    with contextlib.ExitStack() as stack:
        workers, done = [], []
        for p in peers:
            p.prepare(fresh())
            workers.append(stack.enter_context(running(p, wide=True))[0])
            out[p.name] = {"fresh_" + k: v for k, v in sleep_run(p, workers[-1], warm=True).items()}
            done.append(time.monotonic())
        for p, w, t in zip(peers, workers, done, strict=True):
            time.sleep(max(0.0, t + idle_s - time.monotonic()))
            out[p.name].update({"idle_" + k: v for k, v in sleep_run(p, w, warm=False).items()})
    return out


# -- the harness ------------------------------------------------------------------------------

def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")
    from importlib.metadata import version

    from redis import Redis
    server = Redis.from_url(REDIS_URL)
    rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return (f"machine: nproc {os.cpu_count()}, {model}, load average {os.getloadavg()[0]:.2f}\n"
            f"tenure {rev} (Python {sys.version.split()[0]}); huey {version('huey')}, rq {version('rq')}, "
            f"redis-py {version('redis')}, redis-server {server.info()['redis_version']} "
            f"(appendonly {server.config_get('appendonly').get('appendonly')}) at {REDIS_URL}")


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def table(peers: list[Peer], got: dict[str, dict[str, list[float]]], n: int, idle_s: float) -> None:
    rows = [("live", f"1  {n:,} submitted one by one, worker running", "tasks/s ↑"),
            ("queued", f"2  {n:,} queued first, then the worker started", "tasks/s ↑"),
            ("run", f"2  tenure: the {n:,} as one submit_run (ratio: vs peers' 2)", "tasks/s ↑"),
            ("submit", f"   submitting the {n:,} one by one, no worker", "tasks/s ↑"),
            ("max_ms", "3  slowest single submit during row 1", "ms ↓"),
            ("p99_ms", "3  p99 single submit during row 1", "ms ↓"),
            ("fresh_rec", "4  50 x 1-3 s: overhead, worker just ready *", "s ↓"),
            ("idle_rec", f"4  50 x 1-3 s: overhead, worker idle {idle_s:g} s before *", "s ↓"),
            ("fresh_poll", "4  the same, run end as the 5 ms poll saw it", "s ↓"),
            ("idle_poll", f"4  the same after idle {idle_s:g} s, as the poll saw it", "s ↓"),
            ("first", "5  worker start -> first task finished", "s ↓")]
    names = [p.name for p in peers]
    ratios = [s for s in ("huey", "rq") if s in names and "tenure" in names]
    label = {"tenure": "tenure", "huey": "Huey", "rq": "RQ"}

    def med(system: str, key: str) -> float | None:
        values = got.get(system, {}).get("queued" if system != "tenure" and key == "run" else key, [])
        return statistics.median(values) if values else None

    def cell(v: float | None, width: int) -> str:
        text = "–" if v is None else f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
        return f"{text:>{width}}"
    print(f"{'':72}" + "".join(f"{label[s]:>9}" for s in names) + "".join(f"{'tenure/' + label[s]:>13}"
                                                                          for s in ratios))
    for key, what, unit in rows:
        line = f"{what:62}{unit:>10}" + "".join(cell(med(s, key) if s == "tenure" or key != "run" else None, 9)
                                                 for s in names)
        for s in ratios:
            t, o = med("tenure", key), med(s, key)
            line += f"{'–' if t is None or not o else f'{t / o:.2f}':>13}"
        print(line)
    print("* run end: tenure runs.finished_at, RQ job.ended_at (their own records); Huey keeps none: the poll's time.\n"
          f"  overhead = run end - first submit - longest task ({max(SLEEPS):.3f} s); row 4 runs 50-way: Huey -w "
          f"{WIDE} threads,\n  rq worker-pool -n {WIDE}, tenure's default concurrency 64. ↑ higher is better, ↓ lower.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 repeat, 1,000 tasks, idle 5 s")
    ap.add_argument("--only", action="append", choices=["tenure", "huey", "rq"], help="measure only these")
    opts = ap.parse_args()
    repeats = 1 if opts.quick else int(os.environ.get("BENCH_REPEATS", "3"))
    n = 1000 if opts.quick else int(os.environ.get("BENCH_TASKS", "5000"))
    idle_s = 5.0 if opts.quick else float(os.environ.get("BENCH_IDLE_S", "30"))
    print(machine())
    print(f"{repeats} repeat(s), medians; {n:,} no-op tasks; 50 sleeps of {min(SLEEPS):.2f}-{max(SLEEPS):.2f} s "
          f"(sum {sum(SLEEPS):.1f} s); idle {idle_s:g} s; poll every {POLL_S * 1000:.0f} ms", flush=True)
    got: dict[str, dict[str, list[float]]] = {}

    def keep(system: str, figures: dict[str, float]) -> None:
        for k, v in figures.items():
            got.setdefault(system, {}).setdefault(k, []).append(v)
        note(f"  {system:7}" + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    with tempfile.TemporaryDirectory(prefix="tenure-peers-") as tmp:
        moddir = Path(tmp)
        (moddir / "peer_tasks.py").write_text(PEER_TASKS)
        every: list[Peer] = [Tenure(moddir), Huey(moddir), RQ(moddir)]
        peers = [p for p in every if not opts.only or p.name in opts.only]

        def fresh() -> Path:  # a directory per measurement
            return Path(tempfile.mkdtemp(dir=tmp))
        try:
            for r in range(repeats):
                order = peers[r % len(peers):] + peers[:r % len(peers)]  # rotate who goes first
                note(f"repeat {r + 1}/{repeats}, order {' '.join(p.name for p in order)}")
                for p in order:
                    rows: list[Callable[[Peer, int], dict[str, float]]] = [row_live, row_queued]
                    if p.name == "tenure":
                        rows.append(row_run)
                    for row in [*rows, row_first]:
                        p.prepare(fresh())
                        keep(p.name, row(p, n))
                for name, figures in row_sleeps(order, fresh, idle_s).items():
                    keep(name, figures)
        finally:
            for proc in list(LIVE):
                stop(proc)
            if any(p.name == "rq" for p in peers):
                RQ(moddir).prepare(moddir)  # flush the benchmark's Redis db
    table(peers, got, n, idle_s)


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--submit":
        system, moddir, d, how, count = sys.argv[2:7]
        submit_part(system, moddir, d, how, int(count), "--warm" in sys.argv[7:])
    else:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            main()
        except KeyboardInterrupt:
            sys.exit("interrupted: the workers were stopped and the temp dir removed")
