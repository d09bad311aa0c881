"""``dfstream bench``: throughput, latency and scaling, against the limit and a baseline.

The command object lives here so the CLI module only wires it; the benchmark
itself is the ``bench`` package.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from engines.loader import ENGINE_CHOICES

PART_NAMES = ("limit", "baseline", "dfstream", "sweep", "live", "scaling", "scaling-events", "micro", "screen")


def _command_line() -> str:
    argv = list(sys.argv)
    head = Path(argv[0]).name if argv else "dfstream"
    prefix = ["python", "-m", "dfstream"] if head in ("__main__.py", "-m") or head.startswith("python") else ["dfstream"]
    return " ".join(shlex.quote(a) for a in prefix + argv[1:])


@click.command("bench")
@click.option("--clip", metavar="PATH", help="Video to run on (default: a 1280x720 30 fps clip with two real faces, "
              "made once from the shared data folder into the user cache).")
@click.option("--seconds", type=click.FloatRange(0), default=None,
              help="Use the first N seconds of the clip (default 10, 3 with --quick; 0: the whole clip).")
@click.option("-m", "--model", default="detector", show_default=True,
              help="Deepfake detector model: a file or a registry name. When the default 'detector' is not "
                   "installed, an untrained stand-in with its architecture is used (same compute), and the "
                   "results say so.")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(ENGINE_CHOICES),
              help="Model runtime for dfstream, the baseline and the micro-benchmarks (on a GPU machine: tensorrt).")
@click.option("--face-detector", default="auto", show_default=True, metavar="auto|yunet|yunet-opencv|scrfd|haar|PATH",
              help="Face detector for dfstream and the baseline.")
@click.option("--json", "json_path", metavar="PATH", help="Write every figure, machine facts and versions here "
              "(default: bench-results/bench-<time>.json under the user cache).")
@click.option("--plot", "plot_path", metavar="PATH", help="Write a PNG of fps per configuration and latency per "
              "stream count.")
@click.option("--quick", is_flag=True, help="Short clip and fewer sweep points (smoke tests, CI).")
@click.option("--parts", default=",".join(PART_NAMES), show_default=True, metavar="LIST",
              help="Comma-separated parts to run: " + ", ".join(PART_NAMES) + ".")
@click.option("--max-streams", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Most concurrent live streams the scaling part tries.")
@click.option("--out-dir", metavar="DIR", help="Keep the encoded outputs here (default: a temporary folder, removed).")
@click.option("--repeat", type=click.IntRange(1, 9), default=None,
              help="Measure the limit, the baseline and dfstream's defaults this many times, interleaved, and keep "
                   "each one's median; run each count of live streams with video output this many times too, and "
                   "judge it by the median share of frames dropped (default 3, 1 with --quick).")
@click.option("--wait-idle", type=click.FloatRange(0), default=None, metavar="CORES",
              help="Before each measurement wait (up to 10 min) until the machine has fewer than CORES cores busy.")
def bench_command(clip, seconds, model, engine, face_detector, json_path, plot_path, quick, parts, max_streams,
                  out_dir, repeat, wait_idle):
    """Benchmark dfstream against the decode->encode limit and a single-process baseline.

    \b
    In one sitting, one measurement at a time, on one clip:
      limit      decode -> encode only (PyAV, the sink's encoder settings)
      baseline   one process: decode, detect + classify every face of every frame, draw, encode
      dfstream   its defaults, and a sweep of replicas, detection interval and batch size
      live       the clip paced at its frame rate: latency p50/p95/p99, dropped frames
      scaling    1, 2, 4 ... live streams until over 1% of frames drop, or faces are
                 looked for on fewer than half the frames the settings ask for (each count
                 judged by the median of --repeat runs)
      scaling-events
                 the same with events only (--events, no -o: nothing drawn or encoded),
                 as `dfstream monitor` runs its cameras
      micro      transport per hop, face detectors, infer faces/s per engine and batch size
      screen     the clip played in a window on a virtual X display (Xvfb), watched with
                 -s window:TITLE --report at 15 fps: CPU cores of the whole run

    \b
    Examples:
      dfstream bench --json bench.json --plot bench.png
      dfstream bench --clip my.mp4 --seconds 5 --quick
      dfstream bench --engine tensorrt --json gpu.json     # on a GPU machine
    """
    from bench.runner import BenchError, BenchOptions, run_bench
    from bench.report import table

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PART_NAMES]
    if unknown or not chosen:
        raise click.ClickException(f"unknown --parts {', '.join(unknown) or '(none)'}: use {', '.join(PART_NAMES)}")
    if clip is not None and not Path(clip).expanduser().is_file():
        raise click.ClickException(f"no such clip: {clip}")
    if json_path is None:
        from bench.clips import cache_dir

        import time

        json_path = str(cache_dir() / "bench-results" / time.strftime("bench-%Y%m%d-%H%M%S.json"))
    options = BenchOptions(clip=clip, seconds=seconds, model=model, engine=engine, face_detector=face_detector,
                           json_path=json_path, plot_path=plot_path, quick=quick, parts=chosen,
                           max_streams=max_streams, out_dir=out_dir, wait_idle=wait_idle, repeat=repeat, command=_command_line())
    try:
        doc = run_bench(options)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(table(doc))
    click.echo(f"\nwrote {json_path}")
    if plot_path:
        click.echo(f"wrote {plot_path}")
