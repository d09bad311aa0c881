"""What the benchmark writes: machine facts, versions, the table, the JSON, the plot."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.clips import REPO
from pipeline.config import STAGE_NAMES


# -- facts ---------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_quota() -> float | None:
    """CPUs allowed by a cgroup quota (v2, then v1), None when unlimited."""
    v2 = _read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, period = v2.split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota and period and int(quota) > 0:
        return int(quota) / int(period)
    return None


def machine_info() -> dict:
    from engines.onnxruntime_engine import usable_cores

    model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_model": model or platform.processor(),
        "logical_cpus": os.cpu_count(),
        "affinity": affinity,
        "cgroup_cpu_quota": cpu_quota(),
        "usable_cores": usable_cores(),
        "memory_gb": mem,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "gpu": gpu_info(),
    }


def gpu_info() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        return []


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def git_sha() -> dict:
    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            return None

    sha = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"sha": sha, "modified_tracked_files": None if changed is None else len(changed.splitlines())}


def versions() -> dict:
    import av
    import cv2
    import numpy

    found = {
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "av": av.__version__,
        "ffmpeg_libavcodec": ".".join(map(str, av.library_versions.get("libavcodec", ()))) if hasattr(av, "library_versions") else None,
        "opencv": cv2.__version__,
    }
    for name in ("onnxruntime", "pyzmq", "msgpack", "torch", "timm", "insightface", "torch-tensorrt", "tensorrt"):
        found[name] = _version(name)
    try:
        import zmq

        found["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    found["dfstream"] = _version("dfstream")
    found["dfstream_git"] = git_sha()
    return found


# -- table ---------------------------------------------------------------------------
def _f(value, fmt="{:.1f}", none="-"):
    return none if value is None else fmt.format(value)


def results_rows(doc: dict) -> list[dict]:
    """One row per throughput measurement: limit, baseline, each dfstream configuration."""
    rows = []
    limit, baseline = doc.get("limit"), doc.get("baseline")
    base_fps = baseline.get("fps") if baseline and not baseline.get("error") else None
    limit_fps = limit.get("fps") if limit and not limit.get("error") else None
    for name, item in [("limit (decode->encode)", limit), ("baseline (1 process)", baseline)] + [
        (f"baseline, {v['name']}", v) for v in doc.get("baseline_variants", [])] + [
        (f"dfstream {r['name']}", r) for r in doc.get("dfstream", [])
    ]:
        if not item:
            continue
        rows.append({
            "name": name,
            "error": item.get("error"),
            "fps": item.get("fps"),
            "x_baseline": round(item["fps"] / base_fps, 2) if base_fps and item.get("fps") else None,
            "x_limit": round(item["fps"] / limit_fps, 2) if limit_fps and item.get("fps") else None,
            "cpu_cores": item.get("cpu_cores"),
            "peak_rss_mb": item.get("peak_rss_mb"),
            "p50": (item.get("latency_ms") or {}).get("p50_ms"),
            "p99": (item.get("latency_ms") or {}).get("p99_ms"),
            "load": (item.get("load_before") or [None])[0],
            "others": item.get("others_busy_cores"),
        })
    return rows



def stage_cells(run: dict) -> dict[str, str]:
    """"fps/busy% p50ms" per stage (replicas joined with +)."""
    cells = {}
    for stage in STAGE_NAMES:
        rows = [r for r in run.get("stages", []) if r["stage"] == stage]
        if not rows:
            continue
        if len(rows) > 2:  # many replicas (a source per stream): total fps, busiest replica
            fps = f"{sum(r['fps'] or 0 for r in rows):.0f}(x{len(rows)})"
            busy = "max" + _f(max((r["busy_pct"] or 0) for r in rows), "{:.0f}")
        else:
            fps = "+".join(_f(r["fps"], "{:.0f}") for r in rows)
            busy = "+".join(_f(r["busy_pct"], "{:.0f}") for r in rows)
        # busy time per frame handled (mean over the replicas): the stage's cost, also for the sink,
        # which records no per-frame timing, and for detect, which skips most frames
        per_frame = [10.0 * r["busy_pct"] / r["fps"] for r in rows if r["busy_pct"] is not None and r["fps"]]
        service = sum(per_frame) / len(per_frame) if per_frame else None
        cells[stage] = f"{fps}/{busy}% {_f(service, '{:.1f}')}ms"
    return cells


def table(doc: dict) -> str:
    lines = []
    clip = doc.get("clip", {})
    lines.append(f"clip: {clip.get('path')} ({clip.get('width')}x{clip.get('height')}, {clip.get('fps'):.2f} fps, "
                 f"{clip.get('frames')} frames; {clip.get('how')})" if clip else "clip: -")
    model = doc.get("model", {})
    lines.append(f"model: {model.get('path')} ({model.get('note', '')}); engine {doc['settings'].get('engine')}; "
                 f"face detector {doc.get('face_detector', {}).get('kind')}")
    machine = doc.get("machine", {})
    lines.append(f"machine: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable cores "
                 f"(affinity {machine.get('affinity')}); load average at start {doc.get('load_at_start')}")
    lines.append("")
    header = f"{'configuration':<42}{'fps':>8}{'x base':>8}{'x limit':>8}{'cores':>7}{'peak MB':>9}{'p50 ms':>8}{'p99 ms':>8}{'load':>6}{'others':>7}"
    lines.append(header)
    lines.append("-" * len(header))
    for row in results_rows(doc):
        if row["error"]:
            lines.append(f"{row['name']:<42}  FAILED: {row['error']}")
            continue
        lines.append(
            f"{row['name']:<42}{_f(row['fps']):>8}{_f(row['x_baseline'], '{:.2f}'):>8}{_f(row['x_limit'], '{:.2f}'):>8}"
            f"{_f(row['cpu_cores'], '{:.2f}'):>7}{_f(row['peak_rss_mb'], '{:.0f}'):>9}{_f(row['p50']):>8}{_f(row['p99']):>8}"
            f"{_f(row['load'], '{:.2f}'):>6}{_f(row['others'], '{:.2f}'):>7}"
        )
    lines.append("(fps: frames written per second from the first frame read to the output file closed; "
                 "cores: CPU seconds of all processes from the first frame read until they exited / that time; load: 1-min load average before the run; "
                 "others: cores busy with other processes meanwhile)")
    repeated = [(name, item) for name, item in [("limit", doc.get("limit")), ("baseline", doc.get("baseline"))]
                + [(f"dfstream {r['name']}", r) for r in doc.get("dfstream", [])] if item and item.get("fps_runs")]
    if repeated:
        lines.append("repeated runs (median shown above): " + "; ".join(
            f"{name} " + "/".join(_f(v) for v in item["fps_runs"]) for name, item in repeated))
    runs = doc.get("dfstream", [])
    if runs:
        lines.append("")
        lines.append("per stage (fps / busy% / busy ms per frame):")
        lines.append(f"{'configuration':<30}" + "".join(f"{s:>21}" for s in STAGE_NAMES))
        for run in runs:
            if run.get("error"):
                continue
            cells = stage_cells(run)
            lines.append(f"{run['name']:<30}" + "".join(f"{cells.get(s, '-'):>21}" for s in STAGE_NAMES))
    live = doc.get("live")
    if live:
        lines.append("")
        lines.append(f"live, 1 stream paced at {live.get('source_fps', 0):.2f} fps (capture-to-output latency):")
        lines.append(f"{'settings':<42}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'dropped':>14}{'detect 1 in':>12}"
                     f"{'cores':>7}{'load':>6}{'others':>7}")
        for name, r in [("defaults", live)] + [(v["name"], v) for v in doc.get("live_variants") or []]:
            if r.get("error"):
                lines.append(f"{name:<42}  FAILED: {r['error']}")
                continue
            lat = r["latency_ms"]
            dropped = f"{r['dropped']}/{r['frames_decoded']}"
            if r.get("p99_ms_runs"):
                name = f"{name} (p99 of {len(r['p99_ms_runs'])} runs: " + "/".join(_f(v) for v in r["p99_ms_runs"]) + ")"
            lines.append(f"{name:<42}{_f(lat['p50_ms']):>8}{_f(lat['p95_ms']):>8}{_f(lat['p99_ms']):>8}{dropped:>14}"
                         f"{_f(r.get('frames_per_detection'), '{:.2f}'):>12}{_f(r.get('cpu_cores'), '{:.2f}'):>7}{_f((r.get('load_before') or [None])[0], '{:.2f}'):>6}"
                         f"{_f(r.get('others_busy_cores'), '{:.2f}'):>7}")
    series = [("defaults", doc.get("scaling")), ("events only (no video output)", doc.get("scaling_events"))]
    series += [(v["name"], v["runs"]) for v in doc.get("scaling_variants") or []]
    for label, scaling in series:
        if not scaling:
            continue
        title = "live streams"
        lines.append("")
        lines.append(f"scaling, {label}:")
        lines.append(f"{title:<14}{'agg fps':>9}{'fps/stream':>11}{'dropped %':>10}{'detect 1 in':>12}{'p50 ms':>8}{'p95 ms':>8}"
                     f"{'p99 ms':>8}{'cores':>7}{'peak MB':>9}{'load':>6}")
        for s in scaling:
            if s.get("error"):
                lines.append(f"{s.get('streams', '?'):<14}  FAILED: {s['error']}")
                continue
            lat = s["latency_ms"]
            lines.append(f"{s['streams']:<14}{_f(s['fps']):>9}{_f(s['fps_per_stream']):>11}{_f(s['dropped_pct'], '{:.2f}'):>10}"
                         f"{_f(s.get('frames_per_detection'), '{:.2f}'):>12}{_f(lat['p50_ms']):>8}{_f(lat['p95_ms']):>8}{_f(lat['p99_ms']):>8}{_f(s.get('cpu_cores'), '{:.2f}'):>7}"
                         f"{_f(s.get('peak_rss_mb'), '{:.0f}'):>9}{_f((s.get('load_before') or [None])[0], '{:.2f}'):>6}")
            if s.get("dropped_pct_runs"):
                lines.append(f"{'':<14}(the run with the median dropped % of {len(s['dropped_pct_runs'])}: "
                             + " / ".join(_f(v, '{:.2f}') for v in s["dropped_pct_runs"]) + ")")
        lines.append("(latency: worst stream's percentile, capture to written)")
        runs = [s for s in scaling if not s.get("error")]
        if runs:
            lines.append(f"{'  per stage':<14}" + "".join(f"{st:>21}" for st in STAGE_NAMES))
            for s in runs:
                cells = stage_cells(s)
                lines.append(f"{'  ' + str(s['streams']) + ' streams':<14}" + "".join(f"{cells.get(st, '-'):>21}" for st in STAGE_NAMES))
    micro = doc.get("micro") or {}
    if micro.get("transport"):
        lines.append("")
        lines.append(f"{'transport hop':<24}{'msgs/s':>9}{'GB/s':>7}{'CPU ms/msg':>11}{'unloaded p50/p99 ms':>22}")
        for t in micro["transport"]:
            if t.get("error"):
                lines.append(f"FAILED: {t['error']}")
                continue
            ul = t["unloaded_latency_ms"]
            hop = f"{t['transport']} {t['size']} {t.get('pixel_format', 'bgr24')}"
            lines.append(f"{hop:<24}{_f(t['msgs_per_s']):>9}{_f(t['gb_per_s'], '{:.2f}'):>7}"
                         f"{_f(t['cpu_ms_per_msg']['total'], '{:.2f}'):>11}{(_f(ul['p50'], '{:.2f}') + ' / ' + _f(ul['p99'], '{:.2f}')):>22}")
    if micro.get("face_detection"):
        lines.append("")
        lines.append(f"{'face detector':<22}{'input':>11}{'fps':>8}{'ms/frame':>10}{'CPU ms':>8}{'faces/frame':>13}")
        for d in micro["face_detection"]:
            if d.get("skipped") or d.get("error"):
                lines.append(f"{d.get('detector', '?'):<22}  skipped: {d.get('skipped') or d.get('error')}")
                continue
            lines.append(f"{d['detector']:<22}{d['input']:>11}{_f(d['fps']):>8}{_f(d['ms_per_frame'], '{:.2f}'):>10}"
                         f"{_f(d.get('cpu_ms_per_frame'), '{:.1f}'):>8}{_f(d['faces_per_frame'], '{:.2f}'):>13}")
    if micro.get("infer"):
        lines.append("")
        lines.append(f"{'infer engine':<40}{'threads':>12}{'batch':>6}{'faces/s':>10}{'ms/batch':>10}{'CPU ms/batch, 1 per 100 ms':>28}")
        for i in micro["infer"]:
            if i.get("skipped") or i.get("error"):
                lines.append(f"{i.get('engine', '?'):<40}  skipped: {i.get('skipped') or i.get('error')}")
                continue
            where = i["backend"].rsplit(" on ", 1)[-1]
            threads = "auto" if i.get("threads") in (None, "usable cores") else str(i["threads"])
            lines.append(f"{(i['engine'] + ' ' + where + ' ' + i['input'])[:39]:<40}{threads:>12}{i['batch']:>6}"
                         f"{_f(i['faces_per_s']):>10}{_f(i['ms_per_batch'], '{:.2f}'):>10}"
                         f"{_f(i.get('cpu_ms_per_batch_every_100ms'), '{:.2f}'):>28}")
    if doc.get("ratios"):
        lines.append("")
        lines.append("ratios (same run):")
        for name, r in doc["ratios"].items():
            lines.append(f"  {name:<40}{r['value']:>7.2f}  = {r['numerator']} {r['numerator_value']} / "
                         f"{r['denominator']} {r['denominator_value']}")
    if doc.get("targets"):
        lines.append("")
        lines.append("targets:")
        if doc.get("settings", {}).get("quick"):
            lines.append("  (--quick: a short clip, where pipeline fill and drain weigh more and each figure is one run;"
                         " the targets are judged on a full run)")
        for t in doc["targets"]:
            mark = "MET   " if t["met"] else ("MISSED" if t["met"] is False else "n/a   ")
            lines.append(f"  {mark} {t['target']:<70} measured: {t['measured']}")
    return "\n".join(lines)


# -- files -----------------------------------------------------------------------------
def plot(path: str | Path, doc: dict) -> Path:
    """fps per configuration (bars, limit as a line) and latency / drops per live stream count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results_rows(doc) if not r["error"] and r["fps"]]
    scaling = [s for s in (doc.get("scaling") or []) if not s.get("error")]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    names = [r["name"] for r in rows]
    colours = ["#888888" if n.startswith("limit") else "#d9822b" if n.startswith("baseline") else "#2b6cd9" for n in names]
    ax.barh(range(len(rows)), [r["fps"] for r in rows], color=colours)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        label = f"{r['fps']:.1f}"
        if r["x_baseline"] and not r["name"].startswith(("limit", "baseline")):
            label += f"  ({r['x_baseline']:.1f}x base, {100 * (r['x_limit'] or 0):.0f}% of limit)"
        ax.text(r["fps"], i, " " + label, va="center", fontsize=7)
    limit = doc.get("limit") or {}
    if limit.get("fps"):
        ax.axvline(limit["fps"], color="#555555", linestyle="--", linewidth=1)
        ax.axvline(0.6 * limit["fps"], color="#aaaaaa", linestyle=":", linewidth=1)
    ax.set_xlabel("frames per second (file, as fast as possible)")
    clip = doc.get("clip", {})
    ax.set_title(f"throughput on {clip.get('width')}x{clip.get('height')} {clip.get('fps', 0):.0f} fps clip, "
                 f"{doc.get('machine', {}).get('usable_cores')} CPU cores", fontsize=10)
    ax.set_xlim(0, max([r["fps"] for r in rows] + [1]) * 1.45)
    ax = axes[1]
    series = [("defaults", scaling),
              ("events only (no video encoding)", [s for s in doc.get("scaling_events") or [] if not s.get("error")])]
    series += [(v["name"], [s for s in v["runs"] if not s.get("error")]) for v in doc.get("scaling_variants") or []]
    series = [(name, runs) for name, runs in series if runs]
    if series:
        twin = ax.twinx()
        colours = ("#2b6cd9", "#d9822b", "#3a9a3a", "#9a3a9a")
        counts = sorted({s["streams"] for _, runs in series for s in runs})
        for (name, runs), colour in zip(series, colours):
            runs = sorted(runs, key=lambda s: s["streams"])
            n = [s["streams"] for s in runs]
            short = name.replace("events only (no video encoding)", "no video")
            ax.plot(n, [s["latency_ms"]["p99_ms"] for s in runs], "o-", color=colour, label=f"p99, {short}")
            ax.plot(n, [s["latency_ms"]["p50_ms"] for s in runs], ".:", color=colour, label=f"p50, {short}")
            twin.plot(n, [s["dropped_pct"] or 0 for s in runs], "s--", color=colour, alpha=0.45,
                      label=f"dropped %, {short}")
        ax.axhline(100, color="#aaaaaa", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(v) for v in counts])
        ax.set_xlabel("concurrent live streams (paced at the clip's rate)")
        ax.set_ylabel("capture-to-output latency, ms (worst stream; log)")
        ax.set_yscale("log")
        twin.set_ylabel("dropped frames, % (dashed)")
        twin.axhline(1.0, color="#ffaaaa", linestyle=":", linewidth=1)
        lines, labels = ax.get_legend_handles_labels()
        l2, lb2 = twin.get_legend_handles_labels()
        ax.legend(lines + l2, labels + lb2, fontsize=6.5, loc="upper left")
        ax.set_title("live latency and drops per stream count", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no scaling runs", ha="center", va="center")
        ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
