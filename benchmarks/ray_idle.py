"""What an idle local Ray takes from a machine whose cores training fills: wake-ups and CPU.

Starts the local Ray that `umtune sweep` starts for one-worker trials (no dashboard; with
--dashboard, that of `umtune sweep --dashboard` or of multi-worker trials), waits, then counts
for each of its processes, over a window, the context switches of all its threads (each is a
wake-up that can preempt a training thread) and the CPU time they used, and prints them by
process. A trial's training threads on 2 cores are preempted by these (see README, Trial
start-up).

    .venv/bin/python benchmarks/ray_idle.py [--dashboard] [--warm-up 15] [--seconds 20]
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path

import ray

from umtune.trainable.ray_train import connect

TICKS = os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm-up", type=float, default=15, help="seconds after Ray starts")
    p.add_argument("--seconds", type=float, default=20, help="the window counted")
    p.add_argument("--dashboard", action="store_true", help="Ray with its dashboard")
    args = p.parse_args()
    connect(dashboard=args.dashboard)
    try:
        time.sleep(args.warm_up)
        before = process_counters()
        time.sleep(args.seconds)
        after = process_counters()
    finally:
        ray.shutdown()
    wakeups, cpu = collections.Counter(), collections.Counter()
    for pid, (name, switches, ticks) in after.items():
        _, switches_before, ticks_before = before.get(pid, (name, 0, 0))
        wakeups[name] += (switches - switches_before) / args.seconds
        cpu[name] += (ticks - ticks_before) / TICKS / args.seconds
    print(f"idle local Ray{' with its dashboard' * args.dashboard}, {args.seconds:.0f} s from "
          f"{args.warm_up:.0f} s after its start")
    print(f"| {'process':32} | wake-ups/s | % of a core |")
    print(f"|{'-' * 34}|-----------:|------------:|")
    for name, rate in wakeups.most_common():
        print(f"| {name:32} | {rate:10.0f} | {100 * cpu[name]:11.2f} |")
    print(f"| {'all':32} | {sum(wakeups.values()):10.0f} | {100 * sum(cpu.values()):11.2f} |")


def process_counters() -> dict[int, tuple[str, int, int]]:
    """For every process under this one (Ray's, and its workers under the raylet): its name,
    its threads' context switches and their CPU ticks. A process that ends meanwhile is left out."""
    children = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children[parent_pid(int(entry.name))].append(int(entry.name))
            except OSError:
                continue
    counters, todo = {}, list(children[os.getpid()])
    while todo:
        pid = todo.pop()
        todo += children[pid]
        try:
            counters[pid] = (process_name(pid), *thread_totals(pid))
        except OSError:
            continue
    return counters


def parent_pid(pid: int) -> int:
    """The process that started `pid` (the fourth field of its stat; the name before it may
    hold spaces and parentheses)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def process_name(pid: int) -> str:
    """Ray's title (`raylet`, `ray::DashboardAgent`, `ray-dashboard-NodeHead-0`); for a Python
    process, its script's file name; for `python -c` (multiprocessing's children, such as the
    dashboard's modules), its parent's name."""
    words = [w for w in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
             .split("\0") if w]
    first = os.path.basename(words[0].split()[0]) if words else "?"  # a title may hold spaces
    if not first.startswith("python"):
        return first
    if "-c" in words:
        return f"{process_name(parent_pid(pid))} subprocess"
    return os.path.basename(next((w for w in words[1:] if not w.startswith("-")), first))


def thread_totals(pid: int) -> tuple[int, int]:
    """(context switches, CPU ticks) summed over the threads of `pid` (voluntary and not: a
    thread's wake-up ends in one or the other). A thread that ends meanwhile is left out."""
    switches = ticks = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        switches += sum(int(line.split()[1]) for line in status.splitlines()
                        if "ctxt_switches:" in line)
        ticks += int(fields[11]) + int(fields[12])
    return switches, ticks


if __name__ == "__main__":
    main()
