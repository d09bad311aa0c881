"""``dfstream monitor`` end to end, as a real subprocess, against a real RTSP server
(tests/rtsp_server.py), a real mosquitto and a real HTTP webhook receiver.

One scenario, run once for the module (each step needs the monitor the previous one left):
1. a fake alert (the threshold lowered so the untrained model's tracks fire) reaches the webhook
   and MQTT, its snapshot, clip and timeline matching their sha256 and the files on disk;
2. SIGHUP with a second camera added to the file: it starts, and the first camera's frame
   counter keeps growing (its worker was not restarted);
3. the RTSP server killed and started again: offline, then online alerts;
4. webhook and broker down, the server killed again (offline alerts queued), SIGTERM: the monitor
   exits 0 with the queue on disk; sinks up, monitor started again: every alert delivered, each
   exactly once to each sink.
"""
from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.live_helpers import free_port, shared_file
from tests.monitor_helpers import (CLIP_SIZE, MonitorProcess, Mosquitto, MqttRecorder, WebhookReceiver, check_evidence,
                                   small_clip, wait_until)
from tests.rtsp_server import rtsp_server

HEAD = "real/liveportrait_driving_videos/d3.mp4"  # one frontal face
OBAMA = "real/deepfacelive_sample_videos/Obama_speaking.mp4"
SIZE = CLIP_SIZE


def config_text(rtsp_port: int, hook_url: str, mqtt_url: str, detector: Path, storage: Path, cameras: list[str]) -> str:
    lines = "\n".join(f"  - {{name: {name}, url: 'rtsp://127.0.0.1:{rtsp_port}/{name}', detect_every: 2}}"
                      for name in cameras)
    return textwrap.dedent("""\
        cameras:
        {cameras}
        alerts:
          fake: {{on_threshold: 0.0, off_threshold: 0.0, min_seconds: 0.5, cooldown_seconds: 3600}}
          offline_after_seconds: 3
          pre_roll_seconds: 1.5
          post_roll_seconds: 1
        sinks:
          webhooks: [{{url: '{hook}', name: hook, timeout_seconds: 5, backoff_seconds: 0.5, backoff_max_seconds: 2}}]
          mqtt: {{url: '{mqtt}', topic_prefix: mon, backoff_seconds: 0.5, backoff_max_seconds: 2}}
        model: {{detector: '{detector}', face_detector: auto}}
        storage: {{folder: '{storage}'}}
        retry_seconds: 0.5
        retry_max_seconds: 2
        """).format(cameras=lines, hook=hook_url, mqtt=mqtt_url, detector=detector, storage=storage)


def Monitor(config: Path, log: Path) -> MonitorProcess:
    return MonitorProcess(config, log, log.parent / "store")


@pytest.fixture(scope="module")
def scenario(rtsp_ready, tmp_path_factory, tiny_detector):
    folder = tmp_path_factory.mktemp("monitor")
    clips = {"cam": small_clip(shared_file(HEAD), folder / "cam.mp4"),
             "door": small_clip(shared_file(OBAMA), folder / "door.mp4")}
    broker = Mosquitto(folder).start()
    recorder = MqttRecorder(broker.port, "mon")
    hook = WebhookReceiver().start()
    rtsp_port = free_port()
    config = folder / "monitor.yaml"
    write = lambda cameras: config.write_text(config_text(rtsp_port, hook.url, broker.url, tiny_detector,
                                                          folder / "store", cameras))
    write(["cam"])
    log = folder / "monitor.log"
    found: dict = {"folder": folder, "log": log}
    monitor = Monitor(config, log)
    try:
        with rtsp_server(clips, port=rtsp_port):
            # 1. a fake alert
            fake = wait_until(lambda: [b for b in hook.bodies() if b["kind"] == "fake"], 90, what="a fake alert")[0]
            found["fake_webhook"] = fake
            found["fake_mqtt"] = wait_until(lambda: [a for a in recorder.alerts() if a["id"] == fake["id"]], 20,
                                            what="the fake alert on MQTT")[0]
            found["health_topic"] = recorder.last("mon/cam/health")
            # 2. reload with a second camera
            before = wait_until(lambda: monitor.status().get("cam", {}).get("frames"), 30, what="cam's frames")
            write(["cam", "door"])
            monitor.process.process.send_signal(signal.SIGHUP)
            counts = [before]
            def door_streams():
                status = monitor.status()
                if "cam" in status:
                    counts.append(status["cam"]["frames"])
                return status.get("door", {}).get("health") == "streaming"
            wait_until(door_streams, 60, what="door streaming after the reload")
            wait_until(lambda: monitor.status()["cam"]["frames"] > counts[-1] and counts.append(
                monitor.status()["cam"]["frames"]) is None, 20, what="cam's frames growing")
            found["cam_frames"] = counts
        # 3. the RTSP server is gone ... and back
        wait_until(lambda: [b for b in hook.bodies() if b["kind"] == "offline" and b["camera"] == "cam"], 40,
                   what="cam's offline alert")
        with rtsp_server(clips, port=rtsp_port):
            returned, frames_at_return = time.monotonic(), monitor.status()["cam"]["frames"]
            wait_until(lambda: monitor.status()["cam"]["health"] == "streaming"
                       and monitor.status()["cam"]["frames"] > frames_at_return, 30, what="cam watched again")
            found["watched_again_after_s"] = time.monotonic() - returned
            wait_until(lambda: [b for b in hook.bodies() if b["kind"] == "online" and b["camera"] == "cam"], 60,
                       what="cam's online alert")
            delivered_before_down = {b["id"] for b in hook.bodies()}
            # 4. sinks down, camera down, SIGTERM
            hook.stop()
            broker.stop()
        wait_until(lambda: "went offline" in monitor.log_text().split("delivered to hook")[-1], 40,
                   what="an offline alert raised while the sinks are down")
        found["exit_code"] = monitor.terminate()
        found["stop_log"] = monitor.log_text()
        hook.start()
        broker.start()
        wait_until(recorder.client.is_connected, 20, what="the recorder back on the broker")
        found["delivered_before_down"] = delivered_before_down
        with rtsp_server(clips, port=rtsp_port):
            monitor = Monitor(config, log)
            queued_ids = _queued_ids(folder / "store" / "outbox.sqlite")
            found["queued_at_restart"] = queued_ids
            wait_until(lambda: queued_ids <= {b["id"] for b in hook.bodies()}, 60, what="the queued alerts delivered")
            wait_until(lambda: queued_ids <= {a["id"] for a in recorder.alerts()}, 30, what="the queued alerts on MQTT")
            found["final_exit_code"] = monitor.terminate()
        found["webhook"] = hook.bodies()
        found["mqtt"] = recorder.alerts()
        found["availability"] = recorder.last("mon/availability")
    except BaseException:
        print(Path(log).read_text()[-5000:])
        raise
    finally:
        monitor.process.stop()
        recorder.close()
        hook.stop()
        broker.stop()
    return found


def _queued_ids(db: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT alert_id FROM deliveries WHERE state = 'queued'")}


def test_fake_alert_reaches_webhook_and_mqtt_with_evidence_matching_its_sha256(scenario):
    fake = scenario["fake_webhook"]
    assert set(fake["evidence"]) == {"snapshot.jpg", "clip.mp4", "timeline.json"}
    check_evidence(fake, scenario["folder"] / "store" / "alerts")
    check_evidence(scenario["fake_mqtt"], scenario["folder"] / "store" / "alerts")
    assert scenario["fake_mqtt"]["evidence"] == fake["evidence"]
    timeline = json.loads((scenario["folder"] / "store" / "alerts" / fake["id"] / "timeline.json").read_text())
    assert timeline["track_id"] == fake["track_id"] and timeline["points"]
    assert (timeline["on_threshold"], timeline["off_threshold"]) == (0.0, 0.0)  # the numbers it fired under
    import av

    with av.open(str(scenario["folder"] / "store" / "alerts" / fake["id"] / "clip.mp4")) as clip:
        frames = list(clip.decode(video=0))
    assert len(frames) >= 3 and (frames[0].width, frames[0].height) == (SIZE, SIZE)
    assert json.loads(scenario["health_topic"])["state"] in ("starting", "streaming")


def test_reload_adds_a_camera_while_the_other_keeps_counting_frames(scenario):
    counts = scenario["cam_frames"]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts  # never reset: the worker was not restarted


def test_a_camera_whose_server_goes_away_raises_offline_then_online(scenario):
    cam = [b for b in scenario["webhook"] if b["camera"] == "cam" and b["kind"] in ("offline", "online")]
    kinds = [b["kind"] for b in sorted(cam, key=lambda b: b["id"])]
    assert kinds[:2] == ["offline", "online"], kinds
    # the run reconnected by itself (retry_max_seconds 2 in this config): the camera is watched again soon
    assert scenario["watched_again_after_s"] <= 5.0, scenario["watched_again_after_s"]


def test_alerts_queued_at_sigterm_are_delivered_exactly_once_after_the_restart(scenario):
    assert scenario["exit_code"] == 0, scenario["stop_log"][-3000:]
    assert "alerts left queued for the next start" in scenario["stop_log"]
    assert scenario["queued_at_restart"], "nothing was queued at the stop"
    assert not scenario["queued_at_restart"] & scenario["delivered_before_down"]
    webhook_ids = [b["id"] for b in scenario["webhook"]]
    mqtt_ids = [a["id"] for a in scenario["mqtt"]]
    assert len(webhook_ids) == len(set(webhook_ids)), "an alert reached the webhook twice"
    assert len(mqtt_ids) == len(set(mqtt_ids)), "an alert reached MQTT twice"
    assert set(mqtt_ids) == set(webhook_ids)
    assert scenario["final_exit_code"] == 0
    assert scenario["availability"] == b"offline"  # said on the way out
