"""The live path without a camera, and the --display window under a real X server.

These machines have no camera and no screen.  A webcam and a file read with --live
share one code path in the source stage (a reader thread that paces nothing for a
camera, paces a file at its own frame rate, and keeps only the newest frame), so
that path is tested with a file; the window is tested in Xvfb with a screenshot.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.live_helpers import (
    CliProcess,
    decode_frames,
    read_index,
    reencode_clip,
    run_cli,
    screenshot,
    shared_file,
    window_names,
    xvfb,
)

TALKING_HEAD = "real/liveportrait_driving_videos/d3.mp4"  # 512x512, 30 fps, one frontal face, plain wall behind
FPS = 30
# BGR colours the annotate stage draws boxes in, by verdict
AMBER, RED, GREEN = (0, 190, 255), (40, 40, 230), (60, 200, 60)
COLOUR_TOLERANCE = 40  # per channel: the window scales the frame, which blends box edges


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live-clips")
    source = shared_file(TALKING_HEAD)
    return {
        "short": reencode_clip(source, folder / "short.mp4", 60, barcode=True),  # 2 s
        "cam": reencode_clip(source, folder / "cam.mp4", 240),  # 8 s: long enough to catch the window
    }


@pytest.fixture(scope="module")
def display():
    with xvfb("1280x800x24") as name:
        yield name


# -- the live path (shared by webcams and --live files) ----------------------------------


def test_live_source_keeps_only_the_newest_frame_when_the_pipeline_is_slow(clips):
    """The reader thread of a live source: a consumer that falls behind gets the newest frame,
    not the oldest, and every frame it missed is counted as dropped."""
    from pipeline.config import SourceConfig
    from stages.source import SourceStage, probe

    stream = probe(str(clips["short"]), paced=True)
    assert stream.live and stream.paced
    stage = SourceStage(SourceConfig(stream=stream))
    stage.open()
    stage.start()  # the reader thread: what a webcam uses too
    try:
        started = time.monotonic()
        time.sleep(0.5)  # a pipeline busy for half a second: ~15 frames arrive meanwhile
        (packet,) = stage.process(None)
        index = read_index(packet[0].image)
        assert 9 <= index <= 25, f"got frame {index} after 0.5 s at 30 fps"
        assert packet[0].frame_index == index
        assert stage.dropped == index  # frames 0 .. index-1 were replaced unread
        taken = [index]
        while not stage.finished:
            taken += [read_index(p[0].image) for p in stage.process(None)]
        elapsed = time.monotonic() - started
    finally:
        stage.close()
    assert taken == sorted(set(taken)) and taken[-1] == 59
    assert stage.frames_decoded == 60 and stage.frames_sent + stage.dropped == 60
    assert elapsed >= 60 / FPS - 0.2, f"a 2 s clip read as a camera took only {elapsed:.2f} s"


def test_live_file_run_reports_a_live_stream_with_latency_percentiles(tiny_detector, clips, tmp_path):
    run = run_cli(["run", "-s", clips["short"], "--live", "-m", tiny_detector, "-o", tmp_path / "out.mp4",
                   "--metrics-json", tmp_path / "metrics.json"], timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.strays == []
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    (stream,) = metrics["streams"]
    assert stream["live"] is True
    assert metrics["config"]["streams"][0]["paced"] is True
    assert stream["frames_decoded"] == 60
    assert stream["frames_written"] + stream["dropped"] == 60
    latency = stream["latency_ms"]
    assert set(latency) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    # a paced file keeps its own timestamps: each written frame at the time it has in the file
    images, times = decode_frames(tmp_path / "out.mp4")
    assert len(images) == stream["frames_written"] > 0
    served = np.array([read_index(image) for image in images])
    assert np.all(np.diff(served) > 0)
    assert np.allclose(np.array(times), served / FPS, atol=0.5 / FPS)


def test_webcam_that_does_not_exist_fails_with_one_line(tiny_detector, tmp_path):
    device = next(f"/dev/video{n}" for n in range(40, 100) if not os.path.exists(f"/dev/video{n}"))
    run = run_cli(["run", "-s", device, "-m", tiny_detector, "--metrics-json", tmp_path / "m.json"], timeout=60)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 1 and lines[0].startswith(("Error:", "dfstream:")) and device in lines[0], run.stderr
    assert run.strays == []


# -- the window ---------------------------------------------------------------------------


def _longest_run(indices: np.ndarray) -> tuple[int, int]:
    """First and last of the longest run of consecutive integers in a sorted array."""
    if len(indices) == 0:
        return 0, -1
    breaks = np.nonzero(np.diff(indices) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(indices) - 1]])
    longest = int(np.argmax(ends - starts))
    return int(indices[starts[longest]]), int(indices[ends[longest]])


def _frame_on_screen(shot: np.ndarray):
    """(x0, y0, x1, y1) of the video picture on the screen, or None.

    The root window is black (Xvfb -br); OpenCV's window is the non-black area; inside it
    the picture is the block of rows and columns that are mostly not the window's plain
    background colour (the toolbar's icons are too sparse, the margins are background)."""
    ys, xs = np.nonzero(shot.max(axis=2) > 0)
    if len(xs) < 10000:
        return None
    wx0, wy0 = xs.min(), ys.min()
    window = shot[wy0:ys.max() + 1, wx0:xs.max() + 1].astype(np.int16)
    colours, counts = np.unique(window[-1].reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    picture = np.abs(window - background).max(axis=2) > 6
    x0, x1 = _longest_run(np.nonzero(picture.mean(axis=0) > 0.5)[0])
    if x1 - x0 < 100:
        return None
    y0, y1 = _longest_run(np.nonzero(picture[:, x0:x1 + 1].mean(axis=1) > 0.5)[0])
    if y1 - y0 < 100:
        return None
    return int(wx0 + x0), int(wy0 + y0), int(wx0 + x1 + 1), int(wy0 + y1 + 1)


def _near(image: np.ndarray, colour) -> int:
    return int((np.abs(image.astype(np.int16) - np.array(colour, np.int16)).max(axis=2) < COLOUR_TOLERANCE).sum())


def _box_pixels(image: np.ndarray) -> int:
    return sum(_near(image, colour) for colour in (AMBER, RED, GREEN))


def _overlay_checks(shot: np.ndarray, reference: np.ndarray) -> dict:
    """What the screenshot shows, against ``reference`` (a frame of the clip, no overlay)."""
    found = _frame_on_screen(shot)
    if found is None:  # lit pixels tell "nothing on the screen" from "something, but not the picture"
        return {"window": False, "lit_pixels": int((shot.max(axis=2) > 0).sum())}
    x0, y0, x1, y1 = found
    shown = shot[y0:y1, x0:x1]
    height, width = reference.shape[:2]
    scale = (y1 - y0) / height
    # the HUD: a darkened bar with white text at the frame's top left (about 24 source rows
    # high on a 512-pixel frame); just below it the picture is as bright as the clip's
    hud = shown[int(3 * scale):int(17 * scale), int(4 * scale):int(0.4 * width * scale)]
    below = shown[int(40 * scale):int(60 * scale), int(4 * scale):int(0.4 * width * scale)]
    hud_ref = reference[3:17, 4:int(0.4 * width)].mean()
    below_ref = reference[40:60, 4:int(0.4 * width)].mean()
    text = int((shown[:int(24 * scale), :int(0.6 * width * scale)].min(axis=2) > 200).sum())
    return {
        "window": True,
        "frame": found,
        "scale": round(float(scale), 3),
        "amber_pixels": _near(shown, AMBER),
        "box_pixels": _box_pixels(shown),
        "hud_darkening": round(float(hud.mean() / hud_ref), 3),
        "below_hud_brightness": round(float(below.mean() / below_ref), 3),
        "hud_text_pixels": text,
    }


def _overlay_ok(checks: dict, background_box_pixels: int) -> bool:
    return (
        checks.get("window", False)
        and checks["box_pixels"] >= background_box_pixels + 300
        and checks["hud_darkening"] < 0.65
        and 0.75 < checks["below_hud_brightness"] < 1.25
        and checks["hud_text_pixels"] >= 10
    )


def _watch_display_run(tiny_detector, clip, display, reference, background_box_pixels, metrics_path, tmp_path, capsys):
    """Run a --live --display pipeline and screenshot it until the overlay shows (or the run ends)."""
    run = CliProcess(["run", "-s", clip, "--live", "--display", "-m", tiny_detector, "--no-progress",
                      "--metrics-json", metrics_path], env_extra={"DISPLAY": display})
    best, best_checks, shots, windows = None, {"window": False}, 0, []
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and run.process.poll() is None:
            shot = screenshot(display)
            shots += 1
            checks = _overlay_checks(shot, reference)
            if best is None or checks.get("box_pixels", -1) >= best_checks.get("box_pixels", -1):
                best, best_checks = shot, checks
            if _overlay_ok(checks, background_box_pixels):
                break
            windows = windows or [name for name in window_names(display) if "dfstream" in name]
            time.sleep(0.3)
        window_was_up = run.process.poll() is None
        if not best_checks.get("window") and window_was_up:
            run.stop()  # a window that never shows is a hang: do not wait for it
        result = run.wait(timeout=60)
    finally:
        run.stop()
        if best is not None:  # for a person to look at: $DFSTREAM_TEST_ARTIFACTS, else the test's temp dir
            folder = Path(os.environ.get("DFSTREAM_TEST_ARTIFACTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "display-screenshot.png"
            cv2.imwrite(str(path), best)
            with capsys.disabled():
                print(f"\n--display screenshot ({shots} taken, best: {best_checks}): {path}")
    return best, best_checks, shots, windows, result, window_was_up


def test_display_window_shows_the_video_with_boxes_and_hud_under_xvfb(tiny_detector, clips, display, tmp_path, capsys):
    frames, _ = decode_frames(clips["cam"])
    reference = frames[0]
    # the same colour test on the clip itself: boxes must come from the overlay, not the video
    background_box_pixels = max(_box_pixels(frame) for frame in frames[::20])
    assert background_box_pixels < 100
    # the reference's HUD area is bright wall, so a dark bar there can only be the HUD
    assert reference[3:17, 4:200].mean() > 120

    for attempt in range(2):
        metrics_path = tmp_path / f"metrics{attempt}.json"
        best, best_checks, shots, windows, result, window_was_up = _watch_display_run(
            tiny_detector, clips["cam"], display, reference, background_box_pixels, metrics_path, tmp_path, capsys)
        # Known, outside dfstream: on an X server with no window manager, Qt now and then never
        # receives its window's MapNotify (8 of 129 windows here), so it never paints. One
        # more window, and the failure stands only if that one is black too.
        if best_checks.get("window") or not windows or best_checks.get("lit_pixels"):
            break
        warnings.warn(f"--display window stayed black (Qt missed its MapNotify?); trying once more: {windows}")

    assert best_checks.get("window"), (
        f"no dfstream window with a picture appeared on {display} in {shots} screenshots; windows seen: "
        f"{windows or 'none'} (none: a sink stuck opening its window, as when PyAV is imported before cv2; "
        f"one, but black: its pictures never reached the X server); stderr:\n{result.stderr[-2000:]}")
    assert _overlay_ok(best_checks, background_box_pixels), best_checks
    assert window_was_up
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.strays == []
    (stream,) = json.loads(metrics_path.read_text())["streams"]
    assert stream["live"] is True and stream["frames_written"] > 0
    # the box has its verdict's colour: an untrained detector's face is "uncertain", amber
    verdicts = {track["verdict"] for track in stream["tracks"] if track["scores"]}
    assert verdicts == {"uncertain"}, verdicts
    assert best_checks["amber_pixels"] >= background_box_pixels + 300, best_checks


def test_display_without_a_screen_fails_with_one_line(tiny_detector, clips):
    run = run_cli(["run", "-s", clips["short"], "--display", "-m", tiny_detector], timeout=60)  # DISPLAY removed
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 1 and lines[0].startswith(("Error:", "dfstream:")), run.stderr
    assert "DISPLAY" in lines[0]
    assert run.strays == []


def test_display_on_a_screen_that_does_not_answer_fails_with_one_line(tiny_detector, clips, tmp_path):
    number = next(n for n in range(90, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    run = run_cli(["run", "-s", clips["short"], "--display", "-m", tiny_detector, "-o", tmp_path / "out.mp4", "--no-progress"],
                  timeout=60, env_extra={"DISPLAY": f":{number}"})
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 1 and lines[0].startswith(("Error:", "dfstream:")), run.stderr
    assert f":{number}" in lines[0]
    assert run.strays == []
    assert not (tmp_path / "out.mp4").exists()
