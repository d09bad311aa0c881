"""The monitor's config file and alert rules: a bad file gives one line naming the key and
exit status 2; the sample config is valid; the fake rule holds, hysteresis and cooldown; the
offline rule waits its time and reports the camera back."""
from __future__ import annotations

import textwrap

import pytest

from monitor.alerts import FakeTrackRule, OfflineRule
from monitor.config import ConfigError, FakeRule, load_config
from monitor.state import ALERT_OFFLINE, ALERT_ONLINE
from pipeline.config import VerdictRule
from pipeline.health import Health
from tests.conftest import REPO, run_dfstream

GOOD = """
cameras:
  - name: door
    url: rtsp://user:secret@10.0.0.5:554/stream1
  - {name: yard, url: "rtsp://10.0.0.6/live", detect_every: 2, threshold: 0.7}
sinks:
  webhooks: [{url: "https://example.org/hook", headers: {Authorization: "Bearer x"}}]
  mqtt: {url: "mqtt://broker:1884", topic_prefix: site1}
web: {port: 9000}
"""


def _write(tmp_path, text: str):
    path = tmp_path / "monitor.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_config_becomes_typed_settings_with_their_defaults(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert [c.name for c in config.cameras] == ["door", "yard"]
    assert config.cameras[1].detect_every == 2 and config.cameras[1].threshold == 0.7
    assert config.cameras[0].detect_every == 3  # default
    assert config.cameras[0].blinks is None  # eyes read when the model's score uses them
    assert config.sinks.webhooks[0].name == "webhook0"
    assert (config.sinks.mqtt.host, config.sinks.mqtt.port) == ("broker", 1884)
    assert config.web.port == 9000 and config.web.bind == "127.0.0.1"
    assert config.storage.alerts_dir == tmp_path / "dfstream-monitor" / "alerts"  # relative to the file


@pytest.mark.parametrize("text, message", [
    ("cameras:\n  - {name: a, url: rtsp://x}\n  - {name: b}\n", "cameras[1].url: missing"),
    ("cameras: [{name: a, url: rtsp://x}]\nsinks: {mqtt: {url: 'http://b'}}\n", "sinks.mqtt.url: not an mqtt:// URL"),
    ("cameras: [{name: a, url: rtsp://x, detect_every: two}]\n", "cameras[0].detect_every: must be an integer"),
    ("cameras: [{name: a, url: rtsp://x}, {name: a, url: rtsp://y}]\n", "cameras[1].name: 'a' is used by another"),
    ("cameras: [{name: a, url: rtsp://x}]\nalerts: {fake: {on_threshold: 0.5, off_threshold: 0.7}}\n",
     "alerts.fake.off_threshold: must not be above on_threshold"),
    ("cameras: [{name: a, url: rtsp://x}]\nsinks: {webhooks: [{url: 'ftp://x'}]}\n",
     "sinks.webhooks[0].url: not an http:// or https:// URL"),
    ("cameras: [{name: a, url: rtsp://x, colour: red}]\n", "cameras[0].colour: unknown key"),
    ("web: {port: 80}\n", "cameras: missing"),
    ("cameras: [{name: a, url: rtsp://x}]\nweb: {bind: 0.0.0.0}\n", "web.bind: 0.0.0.0 is reachable from other hosts"),
    ("cameras: [{name: a, url: rtsp://x}]\nweb: {bind: 0.0.0.0, token_hash: abc}\n", "web.token_hash: token hash is not"),
    ("cameras: [{name: a, url: rtsp://x}\n", "not valid YAML"),
    ("cameras: [{name: a, url: rtsp://x, blinks: often}]\n", "cameras[0].blinks: must be"),
])
def test_a_bad_config_is_refused_naming_the_key(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_dfstream_monitor_with_a_bad_config_prints_one_line_and_exits_2(tmp_path):
    path = _write(tmp_path, "cameras:\n  - {name: a, url: rtsp://x}\n  - {name: b}\n")
    result = run_dfstream("monitor", path, "--check", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"dfstream monitor: {path}: cameras[1].url: missing"]


def test_the_sample_config_passes_check(tmp_path, tiny_detector):
    text = (REPO / "monitor.example.yaml").read_text()
    text = text.replace("detector: detector", f"detector: {tiny_detector}")  # no download in tests
    path = _write(tmp_path, text)
    result = run_dfstream("monitor", path, "--check", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OK (2 camera(s), 2 sink(s))" in result.stdout


def test_check_prints_each_cameras_alert_rule_in_numbers(tmp_path, tiny_detector):
    from engines.metadata import read_metadata
    from runtime.run_config import verdict_rule

    threshold, band = read_metadata(tiny_detector).threshold, verdict_rule(read_metadata(tiny_detector)).uncertain_band
    path = _write(tmp_path, f"""\
        cameras:
          - {{name: door, url: rtsp://x}}
          - {{name: yard, url: rtsp://y, threshold: 0.3}}
        alerts: {{fake: {{min_seconds: 3}}}}
        model: {{detector: '{tiny_detector}'}}
        """)
    result = run_dfstream("monitor", path, "--check", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (f"door: fake alert at smoothed P(fake) >= {threshold + band:.3f} held 3 s, re-armed below {threshold:.3f}"
            in result.stdout)
    assert f"yard: fake alert at smoothed P(fake) >= {0.3 + band:.3f} held 3 s, re-armed below 0.300" in result.stdout


def test_fake_rule_fires_only_after_the_score_is_held_for_min_seconds():
    rule = FakeTrackRule(FakeRule(on_threshold=0.8, off_threshold=0.6, min_seconds=2.0, cooldown_seconds=0))
    assert not rule.feed(1, 0.9, 0.0)
    assert not rule.feed(1, 0.9, 1.0)
    assert not rule.feed(1, 0.7, 1.5)  # dipped below on: the hold starts again
    assert not rule.feed(1, 0.9, 2.0)
    assert not rule.feed(1, 0.9, 3.9)
    assert rule.feed(1, 0.9, 4.0)


def test_fake_rule_rearms_only_below_the_off_threshold():
    rule = FakeTrackRule(FakeRule(on_threshold=0.8, off_threshold=0.6, min_seconds=0, cooldown_seconds=0))
    assert rule.feed(1, 0.85, 0.0)
    assert not rule.feed(1, 0.7, 1.0)  # between the thresholds: not re-armed
    assert not rule.feed(1, 0.85, 2.0)
    assert not rule.feed(1, 0.5, 3.0)  # below off: re-armed
    assert rule.feed(1, 0.85, 4.0)
    assert rule.feed(2, 0.85, 4.0)  # each track has its own state


def test_fake_rule_cooldown_per_track():
    rule = FakeTrackRule(FakeRule(on_threshold=0.8, off_threshold=0.6, min_seconds=0, cooldown_seconds=60))
    assert rule.feed(1, 0.9, 0.0)
    assert not rule.feed(1, 0.1, 1.0)
    assert not rule.feed(1, 0.9, 30.0)  # re-armed, but within the cooldown
    assert rule.feed(1, 0.9, 61.0)


def test_fake_alert_thresholds_left_unset_follow_the_verdict_the_run_draws(tmp_path):
    from engines.registry import resolve
    from engines.metadata import read_metadata
    from monitor.config import CameraConfig
    from monitor.service import camera_fake_rule
    from runtime.run_config import verdict_rule
    from stages.tracking import VERDICT_FAKE, verdict_of

    config = load_config(_write(tmp_path, "cameras: [{name: a, url: rtsp://x}]\n"))
    assert config.alerts.fake.on_threshold is None and config.alerts.fake.off_threshold is None
    # the shipped detector: its calibrated P(fake) never reaches a fixed 0.8, its red box is what alerts now
    metadata = read_metadata(resolve("detector"))
    rule = camera_fake_rule(CameraConfig(name="a", url="rtsp://x"), config, metadata)
    verdicts = verdict_rule(metadata)
    assert rule.off_threshold == pytest.approx(metadata.threshold)
    assert verdict_of(rule.on_threshold, 5, verdicts) == VERDICT_FAKE
    assert verdict_of(rule.on_threshold - 1e-6, 5, verdicts) != VERDICT_FAKE
    # a camera's own threshold moves them with it
    own = camera_fake_rule(CameraConfig(name="a", url="rtsp://x", threshold=0.3), config, metadata)
    band = verdicts.uncertain_band
    assert (own.on_threshold, own.off_threshold) == (pytest.approx(0.3 + band), pytest.approx(0.3))
    assert verdict_of(own.on_threshold, 5, verdict_rule(metadata, 0.3)) == VERDICT_FAKE


def test_a_fake_threshold_set_alone_keeps_the_hysteresis_in_order():
    verdicts = VerdictRule(threshold=0.584, uncertain_band=0.1)
    assert FakeRule(on_threshold=0.5).for_verdicts(verdicts).off_threshold == 0.5  # not above on
    assert FakeRule(off_threshold=0.7).for_verdicts(verdicts).on_threshold == 0.7  # not under off
    assert FakeRule(on_threshold=0.9, off_threshold=0.2).for_verdicts(verdicts) == FakeRule(on_threshold=0.9,
                                                                                                off_threshold=0.2)
    with pytest.raises(ValueError, match="for_verdicts"):
        FakeTrackRule(FakeRule())


def test_offline_rule_waits_its_time_and_reports_the_camera_back_once():
    rule = OfflineRule(after_s=5)
    assert rule.health(Health.STREAMING, 0) is None
    assert rule.health(Health.RECONNECTING, 10) is None
    assert rule.tick(14) is None
    assert rule.health(Health.OFFLINE, 14.5) is None  # still down, since 10
    assert rule.tick(15) == ALERT_OFFLINE
    assert rule.tick(20) is None  # once
    assert rule.health(Health.STREAMING, 21) == ALERT_ONLINE
    assert rule.health(Health.RECONNECTING, 22) is None
    assert rule.health(Health.STREAMING, 23) is None  # a blip shorter than after_s: no alert either way


# -- the web API's cameras (storage/cameras.api.yaml) ----------------------------------------------


def test_cameras_added_and_removed_through_the_api_are_merged_at_every_load(tmp_path):
    from monitor.config import OVERLAY_NAME

    (tmp_path / "dfstream-monitor").mkdir()
    (tmp_path / "dfstream-monitor" / OVERLAY_NAME).write_text(textwrap.dedent("""\
        cameras:
          - {name: gate, url: "rtsp://10.0.0.7/live", detect_every: 4}
          - {name: yard, url: "rtsp://10.0.0.99/other"}
        removed: [door]
        """))
    config = load_config(_write(tmp_path, GOOD))
    assert [c.name for c in config.cameras] == ["yard", "gate"]  # door removed, gate added
    assert config.camera("gate").detect_every == 4
    assert config.camera("yard").url == "rtsp://10.0.0.6/live"  # the file's camera wins over an added namesake


def test_a_bad_api_overlay_is_one_line_naming_the_file_and_key(tmp_path):
    from monitor.config import OVERLAY_NAME

    (tmp_path / "dfstream-monitor").mkdir()
    overlay = tmp_path / "dfstream-monitor" / OVERLAY_NAME
    overlay.write_text("cameras:\n  - {name: gate}\n")
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, GOOD))
    assert str(error.value) == f"{overlay}: cameras[0].url: missing"


def test_the_overlay_written_is_read_back_the_same(tmp_path):
    from monitor.config import CameraConfig, CameraOverlay, read_overlay, write_overlay

    path = tmp_path / "store" / "cameras.api.yaml"
    written = CameraOverlay([CameraConfig(name="gate", url="rtsp://u:p@10.0.0.7/live", threshold=0.6)], ["door"])
    write_overlay(path, written)
    assert read_overlay(path) == written
    assert (path.stat().st_mode & 0o777) == 0o600  # it holds camera passwords
    assert not list(path.parent.glob(".*partial"))


def test_a_camera_is_not_added_through_the_api_when_its_overlay_cannot_be_saved(tmp_path):
    import shutil

    from monitor.service import MonitorService

    config = load_config(_write(tmp_path, GOOD))
    # (root may write anywhere: a folder where the overlay's temporary file goes makes the write fail)
    config.storage.overlay_path.with_name(f".{config.storage.overlay_path.name}.partial").mkdir(parents=True)
    service = MonitorService(config)
    try:
        with pytest.raises(ValueError) as error:
            service.add_camera("gate", "rtsp://10.0.0.7/live", {})
        message = str(error.value)
        assert message.startswith("cannot add gate:") and "not writable" in message and "\n" not in message
        assert not service.workers and config.camera("gate") is None  # nothing started, nothing half-added
    finally:
        shutil.rmtree(service.runtime_dir, ignore_errors=True)


def test_a_camera_with_blinks_true_reads_the_eyes_in_its_runs_and_one_without_does_not(tmp_path, tiny_detector):
    from engines.metadata import read_metadata
    from monitor.service import camera_run_config
    from pipeline.config import StreamInfo

    config = load_config(_write(tmp_path, "cameras:\n  - {name: hall, url: rtsp://x/hall, blinks: true}\n"
                                          "  - {name: door, url: rtsp://x/door}\n"))
    stream = StreamInfo(stream_id=0, url="rtsp://x/hall", kind="rtsp", live=True, name="hall", width=640, height=480,
                        fps=15.0, time_base=(1, 90000), frame_count=None)
    model = (str(tiny_detector), read_metadata(tiny_detector), ("haar", None))
    hall, door = (camera_run_config(camera, [stream], model, config, None, None) for camera in config.cameras)
    assert hall.infer.eye_landmarks == "pfld68" and door.infer.eye_landmarks is None
    assert hall.detect_every == config.cameras[0].detect_every  # the camera's own settings, as before


def test_a_models_own_lines_move_its_boxes_and_its_fake_alert(tiny_detector):
    from dataclasses import replace

    from engines.metadata import read_metadata
    from monitor.config import CameraConfig, MonitorConfig
    from monitor.service import camera_fake_rule
    from pipeline.config import StreamInfo
    from runtime.run_config import build_run_config
    from stages.tracking import VERDICT_FAKE, VERDICT_REAL, VERDICT_UNSURE, verdict_of

    plain = read_metadata(tiny_detector)
    calibrated = replace(plain, threshold=0.6, uncertain_band=0.03, real_below=0.45)
    stream = StreamInfo(stream_id=0, url="x.mp4", kind="file", live=False, name="x", width=640, height=480, fps=25.0,
                        time_base=(1, 25), frame_count=None)
    run = build_run_config([stream], str(tiny_detector), calibrated, ("haar", None))
    verdicts = run.annotate.verdict
    assert (verdicts.fake_from, verdicts.real_up_to) == (pytest.approx(0.63), pytest.approx(0.42))
    assert [verdict_of(p, 5, verdicts) for p in (0.63, 0.62, 0.5, 0.43, 0.42)] == \
        [VERDICT_FAKE, VERDICT_UNSURE, VERDICT_UNSURE, VERDICT_UNSURE, VERDICT_REAL]
    # a run's own threshold moves the red line; the line for real never rises above it
    assert build_run_config([stream], str(tiny_detector), calibrated, ("haar", None), threshold=0.4).annotate.verdict \
        .real_up_to == pytest.approx(0.37)
    # a model without them: the threshold and the run's default band
    default = build_run_config([stream], str(tiny_detector), plain, ("haar", None)).annotate.verdict
    assert (default.fake_from, default.real_up_to) == (pytest.approx(plain.threshold + VerdictRule.uncertain_band),
                                                       pytest.approx(plain.threshold - VerdictRule.uncertain_band))
    config = MonitorConfig(cameras=[CameraConfig(name="a", url="rtsp://x")])
    rule = camera_fake_rule(config.cameras[0], config, calibrated)
    assert (rule.on_threshold, rule.off_threshold) == (pytest.approx(0.63), pytest.approx(0.6))
