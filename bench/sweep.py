"""How cost grows with run size and concurrency: throughput, status-poll time and memory.

    .venv/bin/python bench/sweep.py [--sizes 50,500,5000,20000,100000] [--concurrency 8,32,64,256]

On SQLite, one `tenure worker` per measurement on a fresh database:

* size sweep (default concurrency 64): one run of N `echo` tasks, submitted with `submit_run`
  to an idle, warmed-up worker. Figures: submit time, throughput (tasks / (run finished_at -
  created_at)), the time of one status-fragment poll (a full 200 render, in-process through the
  Starlette app, sampled every 0.5 s while the run drains, and after it ends), and the peak
  memory of the worker with its zygote and task processes (summed PSS, sampled every 0.2 s);
* concurrency sweep: 5,000 `echo` tasks at each `--concurrency`.

Writes bench/results/sweep.json and bench/results/sweep.png (matplotlib: run it with the
benchmark venv, `make bench-sweep`, or the figures are printed and the plot skipped). Asserts
nothing (a benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TENURE_PY = os.environ.get("TENURE_PYTHON", str(REPO / ".venv" / "bin" / "python"))


def tree_pss_mb(pid: int) -> float:
    """Summed PSS (shared pages counted once, split among their sharers) of ``pid`` and all its
    descendants, in MB: forked task processes share most of their pages with the zygote."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total_kb += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
        todo.extend(children.get(p, []))
    return total_kb / 1000


def measure(tmp: Path, tasks: int, concurrency: int) -> dict[str, Any]:
    """One run of ``tasks`` echo tasks on a fresh database; runs inside tenure's own venv."""
    from starlette.testclient import TestClient

    import service
    from web.app import create_app

    db = tmp / f"sweep-{tasks}-{concurrency}.db"
    t = service.open(str(db))
    worker = subprocess.Popen([sys.executable, "-m", "service", "worker", "--db", str(db), "--log-level", "WARNING",
                               "--concurrency", str(concurrency)], cwd=REPO)
    peak, polls = [0.0], []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_pss_mb(worker.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        t.wait_task(t.submit_task("echo", {}), 30)
        sampler.start()
        started = time.perf_counter()
        run_id = t.submit_run("echo", [{}] * tasks)
        submit_s = time.perf_counter() - started
        with TestClient(create_app(str(db), supervise=False, allowed_hosts=["testserver"])) as client:
            def poll() -> float:
                begun = time.perf_counter()
                assert client.get(f"/runs/{run_id}/status").status_code == 200
                return (time.perf_counter() - begun) * 1000

            while t.run(run_id).status == "running":
                polls.append(poll())
                time.sleep(0.5)
            after = [poll() for _ in range(5)]
        run = t.run(run_id)
        assert run.finished_at is not None
        took = (run.finished_at - run.created_at).total_seconds()
        return {"tasks": tasks, "concurrency": concurrency, "succeeded": run.counts["succeeded"],
                "submit_s": submit_s, "tasks_per_s": tasks / took, "drain_s": took,
                "poll_ms_live": statistics.median(polls) if polls else None,
                "poll_ms_after": statistics.median(after), "peak_mb": peak[0]}
    finally:
        done.set()
        worker.terminate()
        worker.wait(30)
        t.close()


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sizes = [r for r in rows if r["sweep"] == "size"]
    conc = [r for r in rows if r["sweep"] == "concurrency"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    x = [r["tasks"] for r in sizes]
    axes[0].plot(x, [r["tasks_per_s"] for r in sizes], "o-")
    axes[0].set(xscale="log", xlabel="tasks in the run", ylabel="tasks/s", title="throughput (1 worker)")
    axes[1].plot(x, [r["poll_ms_live"] or r["poll_ms_after"] for r in sizes], "o-", label="while it runs")
    axes[1].plot(x, [r["poll_ms_after"] for r in sizes], "s--", label="after it ended")
    axes[1].set(xscale="log", xlabel="tasks in the run", ylabel="ms", title="one status poll (200)")
    axes[1].legend()
    axes[2].plot(x, [r["peak_mb"] for r in sizes], "o-", label="worker + its processes, peak")
    axes[2].set(xscale="log", xlabel="tasks in the run", ylabel="MB (summed PSS)", title="memory")
    axes[3].plot([r["concurrency"] for r in conc], [r["tasks_per_s"] for r in conc], "o-")
    axes[3].set(xscale="log", xlabel="concurrency (5,000 tasks)", ylabel="tasks/s", title="throughput by concurrency")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"tenure on SQLite, {os.cpu_count()} cores: how cost grows (bench/sweep.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="50,500,5000,20000,100000")
    parser.add_argument("--concurrency", default="8,32,64,256")
    parser.add_argument("--measure", nargs=2, type=int, help=argparse.SUPPRESS)  # inside tenure's venv
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the saved JSON")
    args = parser.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(measure(Path(d), *args.measure)))
        return
    RESULTS.mkdir(exist_ok=True)
    if args.plot_only:
        rows = json.loads((RESULTS / "sweep.json").read_text())["rows"]
    else:
        plan = [("size", n, 64) for n in map(int, args.sizes.split(","))]
        plan += [("concurrency", 5000, c) for c in map(int, args.concurrency.split(","))]
        print(f"machine: {os.cpu_count()} cores; SQLite; one `tenure worker`; echo tasks")
        print(f"{'sweep':<12}{'tasks':>8}{'conc':>6}{'submit s':>10}{'tasks/s':>9}{'poll ms live':>14}"
              f"{'poll ms after':>15}{'peak MB':>9}  outcome")
        rows = []
        for sweep, tasks, concurrency in plan:
            out = subprocess.run([TENURE_PY, __file__, "--measure", str(tasks), str(concurrency)], cwd=REPO,
                                 check=True, capture_output=True, text=True).stdout
            row = {"sweep": sweep, **json.loads(out.strip().splitlines()[-1])}
            rows.append(row)
            live = f"{row['poll_ms_live']:.1f}" if row["poll_ms_live"] is not None else "–"
            print(f"{sweep:<12}{tasks:>8,}{concurrency:>6}{row['submit_s']:>10.2f}{row['tasks_per_s']:>9,.0f}"
                  f"{live:>14}{row['poll_ms_after']:>15.1f}{row['peak_mb']:>9.0f}  "
                  f"{row['succeeded']:,} of {tasks:,} succeeded", flush=True)
        (RESULTS / "sweep.json").write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=1))
    if plot(rows, RESULTS / "sweep.png"):
        print(f"plot: {RESULTS / 'sweep.png'}")
    else:
        print("plot skipped: matplotlib is not here (run with .venv-bench/bin/python, or make bench-sweep)")


if __name__ == "__main__":
    main()
