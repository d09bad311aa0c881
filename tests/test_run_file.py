"""End-to-end runs on real clips: files are lossless and exact."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipeline.config import RunConfig
from tests.conftest import needs_shared_data, run_dfstream, shared
from tests.video_helpers import small_frames, video_facts, write_clip

pytestmark = needs_shared_data

HAMILTON = "real/face_recognition_examples/short_hamilton_clip.mp4"  # 640x360, 29.97 fps, AAC audio, several faces
TALKING_HEAD = "real/liveportrait_driving_videos/d0.mp4"  # 512x512, 25 fps, one frontal face, no audio


@pytest.fixture(scope="module")
def hamilton_run(tmp_path_factory, tiny_detector):
    """One run with two detect and two infer replicas, shared by the assertions below."""
    out = tmp_path_factory.mktemp("hamilton")
    result = run_dfstream(
        "run", "-s", shared(HAMILTON), "-m", tiny_detector, "--replicas", "2", "--no-draw",
        "-o", out / "out.mp4", "--events", out / "events.jsonl", "--metrics-json", out / "metrics.json",
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_output_has_the_inputs_frame_count_size_and_timestamps(hamilton_run):
    out, _ = hamilton_run
    source, output = video_facts(shared(HAMILTON)), video_facts(out / "out.mp4")
    assert (output.width, output.height) == (source.width, source.height)
    assert output.frames == source.frames
    assert np.allclose(output.times, source.times, atol=1e-3)


def test_output_carries_the_inputs_audio(hamilton_run):
    out, _ = hamilton_run
    source, output = video_facts(shared(HAMILTON)), video_facts(out / "out.mp4")
    assert source.audio_packets > 0
    assert output.audio_packets == source.audio_packets
    assert output.audio_seconds == pytest.approx(source.audio_seconds, abs=0.05)


def _barcode_clip(path, frames: int = 90) -> None:
    """A clip whose frames carry their own index as a 10-bit barcode, over real faces."""
    photo = cv2.imread(str(shared("real/deepface_tests/couple.jpg")))
    photo = cv2.resize(photo, (640, 448))
    images = []
    for index in range(frames):
        image = np.roll(photo, index * 3, axis=1).copy()
        for bit in range(10):
            value = 255 if (index >> bit) & 1 else 0
            image[448 - 32:, bit * 64:(bit + 1) * 64] = value
        images.append(image)
    write_clip(path, images)


def _read_barcodes(path) -> list[int]:
    import av

    indices = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            strip = frame.to_ndarray(format="gray")[448 - 24:448 - 8]
            bits = [strip[:, bit * 64 + 16:(bit + 1) * 64 - 16].mean() > 127 for bit in range(10)]
            indices.append(sum(1 << bit for bit, on in enumerate(bits) if on))
    return indices


def test_frames_stay_in_order_with_two_replicas(tmp_path, tiny_detector):
    clip = tmp_path / "barcode.mp4"
    _barcode_clip(clip)
    assert _read_barcodes(clip) == list(range(90))  # the reader itself works
    result = run_dfstream("run", "-s", clip, "-m", tiny_detector, "--detect-replicas", "2", "--infer-replicas", "2",
                          "--detect-every", "1", "--max-batch", "3", "--no-draw", "-o", tmp_path / "out.mp4")
    assert result.returncode == 0, result.stderr
    assert _read_barcodes(tmp_path / "out.mp4") == list(range(90))


def test_events_file_has_one_valid_record_per_face_per_analysed_frame(hamilton_run):
    out, _ = hamilton_run
    records = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert records, "no faces found in a clip full of faces"
    for record in records:
        assert {"stream", "frame_index", "pts", "box", "track_id", "score", "verdict"} <= set(record)
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 < x2 and 0 <= y1 < y2
        assert 0.0 <= record["score"] <= 1.0
        assert record["frame_index"] % 3 == 0  # analysed every 3rd frame by default
        assert record["track_id"] >= 1
    frames = [r["frame_index"] for r in records]
    assert frames == sorted(frames)


def test_metrics_json_reports_stages_and_latency(hamilton_run):
    out, _ = hamilton_run
    metrics = json.loads((out / "metrics.json").read_text())
    stages = {(row["stage"], row["replica"]) for row in metrics["stages"]}
    assert {("detect", 0), ("detect", 1), ("infer", 0), ("infer", 1), ("sink", 0)} <= stages
    stream = metrics["streams"][0]
    assert stream["frames_written"] == stream["frames_sent"] == video_facts(shared(HAMILTON)).frames
    assert stream["latency_ms"]["p50_ms"] > 0
    assert stream["latency_ms"]["p99_ms"] >= stream["latency_ms"]["p50_ms"]


def test_every_stage_but_the_encoding_sink_yields_the_cpu_to_it(hamilton_run):
    out, _ = hamilton_run
    metrics = json.loads((out / "metrics.json").read_text())
    niceness = {(row["stage"], row["replica"]): row["niceness"] for row in metrics["stages"]}
    sink = niceness.pop(("sink", 0))
    assert niceness.pop(("annotate", 0)) == sink  # annotate runs in the sink's process
    assert set(niceness.values()) == {min(19, sink + RunConfig.upstream_niceness)}  # 19: the kernel's cap


def test_frames_go_round_the_stages_that_have_nothing_to_do_with_them(hamilton_run):
    out, _ = hamilton_run
    metrics = json.loads((out / "metrics.json").read_text())
    frames = video_facts(shared(HAMILTON)).frames
    processed = {}
    for row in metrics["stages"]:
        processed[row["stage"]] = processed.get(row["stage"], 0) + row["frames"]
    assert processed["source"] == processed["annotate"] == processed["sink"] == frames
    # faces are detected (and crops cut) on every 3rd frame: only those frames visit detect,
    # and only those with faces go on through batch and infer
    assert processed["detect"] == len(range(0, frames, 3))
    assert 0 < processed["infer"] == processed["batch"] < processed["detect"]


def _event_facts(path) -> list[tuple]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["frame_index"], r["track_id"], tuple(round(v) for v in r["box"]), round(r["score"], 4)) for r in records]


def test_events_only_run_sends_pixels_only_to_the_face_detector_and_finds_the_same_faces(hamilton_run, tmp_path,
                                                                                        tiny_detector):
    out, _ = hamilton_run
    result = run_dfstream("run", "-s", shared(HAMILTON), "-m", tiny_detector, "--replicas", "2",
                          "--events", tmp_path / "events.jsonl", "--metrics-json", tmp_path / "metrics.json")
    assert result.returncode == 0, result.stderr
    assert _event_facts(tmp_path / "events.jsonl") == _event_facts(out / "events.jsonl")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    source = [row for row in metrics["stages"] if row["stage"] == "source"][0]
    frames = video_facts(shared(HAMILTON)).frames
    assert source["extra"]["pictures_sent"] == len(range(0, frames, 3))  # detection runs on every 3rd frame
    # nothing to encode: no stage is put behind another
    assert len({row["niceness"] for row in metrics["stages"]}) == 1


def test_faces_are_found_and_tracked_on_a_frontal_talking_head(tmp_path, tiny_detector):
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "-m", tiny_detector, "--events", tmp_path / "ev.jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    analysed = {r["frame_index"] for r in records}
    frames = video_facts(shared(TALKING_HEAD)).frames
    assert len(analysed) >= 0.9 * len(range(0, frames, 3))  # a face on (nearly) every analysed frame
    assert len({r["track_id"] for r in records}) <= 2  # one person: one track, not one per frame


def test_two_sources_in_one_run_each_get_their_own_output(tmp_path, tiny_detector):
    result = run_dfstream(
        "run", "-s", shared(TALKING_HEAD), "-s", shared("real/liveportrait_driving_videos/d12.mp4"),
        "-m", tiny_detector, "-o", tmp_path / "{stream}.mp4", "--metrics-json", tmp_path / "m.json",
    )
    assert result.returncode == 0, result.stderr
    for name, clip in (("d0", TALKING_HEAD), ("d12", "real/liveportrait_driving_videos/d12.mp4")):
        output, source = video_facts(tmp_path / f"{name}.mp4"), video_facts(shared(clip))
        assert output.frames == source.frames
        assert np.allclose(output.times, source.times, atol=1e-3)
    metrics = json.loads((tmp_path / "m.json").read_text())
    infer = [r for r in metrics["stages"] if r["stage"] == "batch"][0]
    assert infer["extra"]["batches"] > 0


def test_several_sources_need_an_output_pattern(tmp_path, tiny_detector):
    result = run_dfstream("run", "-s", shared(TALKING_HEAD), "-s", shared(TALKING_HEAD), "-m", tiny_detector,
                          "-o", tmp_path / "out.mp4")
    assert result.returncode != 0
    assert "{stream}" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("size, pix_fmt", [((321, 321), "yuv444p"), ((512, 512), "yuv422p10le")])
def test_odd_sizes_and_other_pixel_formats_run_through_with_faces_found(tmp_path, tiny_detector, size, pix_fmt):
    """Frames travel as I420 only when both sides are even (odd ones as BGR), and the decoder's
    other layouts are converted once, in the source."""
    import av
    from fractions import Fraction

    clip = tmp_path / f"in-{pix_fmt}.mkv"
    with av.open(str(shared(TALKING_HEAD))) as src, av.open(str(clip), "w") as dst:
        stream = dst.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for number, frame in enumerate(src.decode(video=0)):
            if number == 30:
                break
            frame = frame.reformat(width=size[0], height=size[1], format=pix_fmt)
            frame.pts = None
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    result = run_dfstream("run", "-s", clip, "-m", tiny_detector, "-o", tmp_path / "out.mp4",
                          "--events", tmp_path / "events.jsonl")
    assert result.returncode == 0, result.stderr
    facts = video_facts(tmp_path / "out.mp4")
    assert (facts.width, facts.height, facts.frames) == (size[0], size[1], 30)
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len({r["frame_index"] for r in records}) == 10  # the one face, on every 3rd frame
    assert all(0 <= r["box"][0] < r["box"][2] <= size[0] and 0 <= r["box"][1] < r["box"][3] <= size[1] for r in records)


def test_a_phone_clip_stored_sideways_is_turned_upright_and_its_faces_found(tmp_path, tiny_detector):
    """Phones store portrait video sideways with a display matrix that says how to turn it:
    the pipeline must see (and write) the picture the way a player shows it."""
    import av

    upright = []
    with av.open(str(shared(TALKING_HEAD))) as src:
        for number, frame in enumerate(src.decode(video=0)):
            if number == 30:
                break
            upright.append(cv2.resize(frame.to_ndarray(format="bgr24"), (320, 240), interpolation=cv2.INTER_AREA))
    clip = tmp_path / "sideways.mp4"
    # stored turned clockwise, with "turn me 90 degrees counter-clockwise to show me"
    write_clip(clip, [np.ascontiguousarray(np.rot90(image, -1)) for image in upright], display_rotation=90)

    result = run_dfstream("run", "-s", clip, "-m", tiny_detector, "--no-draw", "-o", tmp_path / "out.mp4",
                          "--events", tmp_path / "events.jsonl")
    assert result.returncode == 0, result.stderr
    facts = video_facts(tmp_path / "out.mp4")
    assert (facts.width, facts.height, facts.frames) == (320, 240, 30)
    written = small_frames(tmp_path / "out.mp4")
    expected = np.stack([cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (64, 36), interpolation=cv2.INTER_AREA)
                         for image in upright]).astype(np.float32)
    assert np.abs(written - expected).mean() < 6  # the same picture, up to two encodings
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len({r["frame_index"] for r in records}) == 10  # the face, upright, on every 3rd frame
    assert all(r["box"][2] <= 320 and r["box"][3] <= 240 for r in records)


def test_annotate_in_a_process_of_its_own_writes_the_same_frames_in_order(tmp_path, tiny_detector):
    """The graph without the annotate+sink chain (RunConfig.annotate_in_sink=False) still works."""
    import io

    from engines.metadata import read_metadata
    from runtime.run_config import build_run_config, probe_streams
    from runtime.supervisor import Supervisor

    clip = tmp_path / "barcode.mp4"
    _barcode_clip(clip)
    config = build_run_config(probe_streams([str(clip)], False), str(tiny_detector), read_metadata(tiny_detector),
                              ("haar", None), detect_every=1, draw=False, output=str(tmp_path / "out.mp4"),
                              progress=False, annotate_in_sink=False)
    result = Supervisor(config, out=io.StringIO()).run()
    assert result.error is None
    assert _read_barcodes(tmp_path / "out.mp4") == list(range(90))
    rows = {(row["stage"], row["replica"]): row for row in result.metrics["stages"]}
    assert rows[("annotate", 0)]["frames"] == rows[("sink", 0)]["frames"] == 90
    assert rows[("annotate", 0)]["niceness"] > rows[("sink", 0)]["niceness"]  # its own, niced process
