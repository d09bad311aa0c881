"""Measuring one part of the benchmark in its own process: CPU, memory, machine load.

Every measurement runs in a fresh child process (spawned by the bench process, so
the whole benchmark is one process tree), one after the other, never two at once.
A fresh process per measurement makes peak memory a figure of that measurement
alone.  In the child, a sampler thread sums the resident memory of the child and
all its descendants (dfstream's stage processes) a few times a second; the peak
of that sum is "peak memory, all processes".  Around the measurement, the load
average and the whole machine's busy CPU time (``/proc/stat``) are recorded, so a
result says how much of the machine others were using while it ran.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from pathlib import Path

from pipeline.metrics import rss_mb

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            try:
                kids.extend(int(p) for p in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        pass
    return kids


def process_tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children_of(pid))
    return seen


def cpu_s_of(pid: int) -> float:
    """User + system CPU seconds of one live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_busy_s(niced: bool = False) -> float | None:
    """CPU seconds the whole machine has spent busy (all cores, all processes) since boot.
    ``niced``: only niced processes' time."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    steal = values[7] if len(values) > 7 else 0
    busy = sum(values[:8]) - idle - steal
    return (values[1] if niced else busy) / CLOCK_TICKS


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


class MemorySampler(threading.Thread):
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval_s: float = 0.2):
        super().__init__(name="bench-memory", daemon=True)
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.peak_processes = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        pids = process_tree(os.getpid())
        total = sum(rss_mb(p) for p in pids)
        if total > self.peak_mb:
            self.peak_mb, self.peak_processes = total, len(pids)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(2.0)
        self.sample()


def _child(target: str, kwargs: dict, conn) -> None:
    """Entry point of a measurement process: run ``module:function`` and send its result back."""
    import importlib
    import resource

    sampler = MemorySampler()
    sampler.start()
    try:
        module, name = target.split(":")
        result = getattr(importlib.import_module(module), name)(**kwargs)
        sampler.stop()
        result = dict(result) if isinstance(result, dict) else {"results": result}
        result["peak_rss_mb"] = round(sampler.peak_mb, 1)
        result["peak_rss_processes"] = sampler.peak_processes
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the spawning parent
        result["peak_rss_mb_self"] = round(rss_mb(os.getpid(), "VmHWM"), 1)
        # everything this measurement's processes used, start-up included (children once reaped)
        result["tree_cpu_s"] = round(own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 2)
        conn.send({"ok": True, "result": result})
    except BaseException as exc:  # the parent reports it as one line; the trace goes in the JSON
        sampler.stop()
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})
    finally:
        conn.close()


def measure(target: str, timeout_s: float = 900.0, **kwargs) -> dict:
    """Run ``target`` (``"module:function"``) with ``kwargs`` in a fresh process.

    Returns its result dict, plus ``load_before`` / ``load_after`` (load averages),
    ``machine_busy_cores`` (all processes on the machine, averaged over the
    measurement) and ``wall_s``; or ``{"error": ...}`` when it failed.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    load_before = loadavg()
    busy0, nice0, t0 = machine_busy_s(), machine_busy_s(niced=True), time.monotonic()
    process = context.Process(target=_child, args=(target, kwargs, child), name=f"bench-{target.split(':')[1]}")
    process.start()
    child.close()
    reply = None
    try:
        if parent.poll(timeout_s):
            reply = parent.recv()
    except EOFError:
        reply = None
    finally:
        process.join(10.0)
        if process.is_alive():
            process.terminate()
            process.join(5.0)
    wall = time.monotonic() - t0
    busy1, nice1 = machine_busy_s(), machine_busy_s(niced=True)
    info = {
        "load_before": load_before,
        "load_after": loadavg(),
        "wall_s": round(wall, 2),
        "machine_busy_cores": round((busy1 - busy0) / wall, 2) if busy0 is not None and busy1 is not None and wall else None,
        # niced processes: other people's background jobs, and dfstream's own stages before the sink
        "machine_niced_cores": round((nice1 - nice0) / wall, 2) if nice0 is not None and nice1 is not None and wall else None,
    }
    if reply is None:
        return {"error": f"the measurement process died (exit code {process.exitcode}) or timed out", **info}
    if not reply["ok"]:
        return {"error": reply["error"], "trace": reply["trace"], **info}
    result = reply["result"]
    if info["machine_busy_cores"] is not None and result.get("tree_cpu_s") is not None and wall:
        # what other processes on the machine used meanwhile (other engineers' training jobs)
        info["others_busy_cores"] = round(max(0.0, info["machine_busy_cores"] - result["tree_cpu_s"] / wall), 2)
    return {**result, **info}
