"""SIGTERM while an alert's evidence is still being collected: the real ``dfstream monitor`` with a
camera on a real RTSP server (tests/rtsp_server.py), a long post roll, and the webhook down.

The alert fires (the fake rule's thresholds at 0), SIGTERM comes before its post roll is over: the
monitor must exit 0 with the alert's folder complete and consistent (snapshot, a clip PyAV plays,
timeline, alert.json whose sha256s are the files'), the alert queued in the outbox; started again
with the webhook up, it delivers that alert exactly once.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path

import av
import pytest
import yaml

from tests.live_helpers import free_port, shared_file
from tests.monitor_helpers import CLIP_SIZE, MonitorProcess, WebhookReceiver, check_evidence, small_clip, wait_until
from tests.rtsp_server import rtsp_server

HEAD = "real/liveportrait_driving_videos/d3.mp4"  # one frontal face
POST_ROLL_S = 60  # far longer than the test: SIGTERM always comes while the clip is being collected
COLLECT_S = 3  # seconds of post roll before SIGTERM


def config(rtsp_port: int, hook: str, detector: Path, storage: Path) -> dict:
    return {
        "cameras": [{"name": "cam", "url": f"rtsp://127.0.0.1:{rtsp_port}/cam", "detect_every": 2}],
        "alerts": {"fake": {"on_threshold": 0.0, "off_threshold": 0.0, "min_seconds": 0.5, "cooldown_seconds": 3600},
                   "offline_after_seconds": 600, "pre_roll_seconds": 2, "post_roll_seconds": POST_ROLL_S},
        "sinks": {"webhooks": [{"url": hook, "name": "hook", "timeout_seconds": 5, "backoff_seconds": 0.5,
                                "backoff_max_seconds": 1}]},
        "model": {"detector": str(detector), "face_detector": "auto"},
        "storage": {"folder": str(storage)},
        "retry_seconds": 0.5,
        "retry_max_seconds": 2,
    }


def _deliveries(db: Path, alert_id: str) -> dict:
    with sqlite3.connect(db) as conn:
        body = conn.execute("SELECT body FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        states = dict(conn.execute("SELECT sink, state FROM deliveries WHERE alert_id = ?", (alert_id,)).fetchall())
    return {"body": json.loads(body[0]) if body else None, "states": states}


@pytest.fixture(scope="module")
def stopped(rtsp_ready, tmp_path_factory, tiny_detector):
    folder = tmp_path_factory.mktemp("monitor-stop")
    clip = small_clip(shared_file(HEAD), folder / "cam.mp4")
    storage = folder / "store"
    log = folder / "monitor.log"
    hook = WebhookReceiver(free_port())  # not started: the webhook is down during the first run
    found: dict = {"storage": storage}
    monitor = None
    try:
        with rtsp_server({"cam": clip}) as rtsp:
            config_path = folder / "monitor.yaml"
            config_path.write_text(yaml.safe_dump(config(rtsp.port, hook.url, tiny_detector, storage)))
            monitor = MonitorProcess(config_path, log, storage)
            fired = wait_until(lambda: re.search(r"camera cam: track \d+ fake", monitor.log_text()), 120,
                               what="a fake alert firing")
            time.sleep(COLLECT_S)  # part of the post roll collected, most of it not
            found["pending_at_sigterm"] = not (storage / "alerts").is_dir() or not any(
                (storage / "alerts").glob("*-cam-fake-*/alert.json"))
            sigterm = time.monotonic()
            found["exit_code"] = monitor.terminate()
            found["stop_s"] = time.monotonic() - sigterm
            found["fired_line"] = fired.group(0)
        found["stop_log"] = log.read_text()
        alerts = sorted((storage / "alerts").glob("*-cam-fake-*"))
        found["alert_folders"] = alerts
        alert_id = alerts[0].name if alerts else None
        found["alert_id"] = alert_id
        found["outbox_at_stop"] = _deliveries(storage / "outbox.sqlite", alert_id) if alert_id else {}
        # started again (no camera now: its server is gone), the webhook up
        hook.start()
        monitor = MonitorProcess(config_path, log, storage)
        wait_until(lambda: alert_id in {b["id"] for b in hook.bodies()}, 60, what="the queued alert delivered")
        wait_until(lambda: "delivered to hook" in log.read_text().split("SIGTERM")[-1], 20, what="its delivery logged")
        time.sleep(2)  # a repeat, were there one, would come within the webhook's backoff (0.5-1 s)
        found["final_exit_code"] = monitor.terminate()
        found["webhook"] = hook.bodies()
        found["outbox_at_end"] = _deliveries(storage / "outbox.sqlite", alert_id)
    except BaseException:
        print(log.read_text()[-6000:] if log.is_file() else "no log")
        raise
    finally:
        if monitor is not None:
            monitor.stop()
        hook.stop()
    return found


def test_sigterm_while_collecting_the_clip_exits_0_with_the_alert_written(stopped):
    assert stopped["pending_at_sigterm"], "the alert was complete before SIGTERM: nothing was tested"
    assert stopped["exit_code"] == 0, stopped["stop_log"][-3000:]
    assert stopped["stop_s"] < POST_ROLL_S, "the stop waited for the post roll instead of writing what there was"
    assert len(stopped["alert_folders"]) == 1, stopped["alert_folders"]


def test_the_alert_folder_is_complete_and_its_sha256s_are_the_files(stopped):
    folder = stopped["alert_folders"][0]
    assert {p.name for p in folder.iterdir()} == {"snapshot.jpg", "clip.mp4", "timeline.json", "alert.json"}
    alert = json.loads((folder / "alert.json").read_text())
    assert alert["id"] == folder.name and alert["kind"] == "fake"
    assert set(alert["sha256"]) == {"snapshot.jpg", "clip.mp4", "timeline.json"} == set(alert["evidence"])
    for name, digest in alert["sha256"].items():
        assert Path(alert["evidence"][name]) == folder / name
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    timeline = json.loads((folder / "timeline.json").read_text())
    assert timeline["track_id"] == alert["track_id"] and timeline["points"]


def test_the_clip_cut_short_by_sigterm_plays(stopped):
    with av.open(str(stopped["alert_folders"][0] / "clip.mp4")) as clip:
        frames = list(clip.decode(video=0))
    assert len(frames) >= 3 and (frames[0].width, frames[0].height) == (CLIP_SIZE, CLIP_SIZE)
    times = [f.time for f in frames]
    assert times == sorted(times)
    # the frames after the alert, up to SIGTERM, are in it (at least half of the seconds collected)
    assert times[-1] - times[0] >= COLLECT_S / 2, times


def test_the_timeline_holds_the_scores_after_the_alert_up_to_sigterm(stopped):
    timeline = json.loads((stopped["alert_folders"][0] / "timeline.json").read_text())
    after = [p for p in timeline["points"] if p["time"] > timeline["fired_at"]]
    assert after, timeline["points"]


def test_the_alert_is_queued_in_the_outbox_at_the_stop(stopped):
    outbox, alert = stopped["outbox_at_stop"], json.loads((stopped["alert_folders"][0] / "alert.json").read_text())
    assert outbox["states"] == {"hook": "queued"}
    assert outbox["body"]["sha256"] == alert["sha256"]
    assert "alerts left queued for the next start" in stopped["stop_log"]


def test_the_alert_is_delivered_exactly_once_after_the_restart(stopped):
    delivered = [b for b in stopped["webhook"] if b["id"] == stopped["alert_id"]]
    assert len(delivered) == 1, f"delivered {len(delivered)} times"
    check_evidence(delivered[0], stopped["storage"] / "alerts")
    assert stopped["outbox_at_end"]["states"] == {"hook": "sent"}
    assert stopped["final_exit_code"] == 0
