"""The real ``dfstream monitor`` seen from outside, as its users see it: the dashboard in headless
chromium, ``/metrics`` scraped and parsed, cameras that misbehave, cameras added and removed
through the web API.

One monitor subprocess for the module (its steps need the monitor the previous one left), with
three cameras: ``cam`` on a real RTSP server (tests/rtsp_server.py) playing a clip with a face
(the fake rule's thresholds at 0, so its tracks fire), ``silent`` on a TCP port that accepts and
never answers and ``garbage`` on one that answers bytes of no protocol; both with a password in
their URL, which must show nowhere. A webhook receiver takes the alerts.
"""
from __future__ import annotations

import json
import re
import signal
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import pytest
import yaml

from monitor.config import OVERLAY_NAME
from tests.live_helpers import CameraProxy, free_port, shared_file
from tests.monitor_helpers import (CHROMIUM, CHROMIUM_MISSING, MonitorProcess, WebhookReceiver,
                                   chromium, small_clip, tile_looks_like_a_picture, wait_until)
from tests.rtsp_server import rtsp_server

HEAD = "real/liveportrait_driving_videos/d3.mp4"  # one frontal face
PASSWORDS = {"silent": "SilentPw1x", "garbage": "GarbagePw2x", "extra": "ExtraPw3x"}
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)


def http(method: str, url: str, body: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def config(rtsp_port: int, silent_port: int, garbage_port: int, hook: str, web_port: int, detector: Path,
           storage: Path) -> dict:
    return {
        "cameras": [
            {"name": "cam", "url": f"rtsp://127.0.0.1:{rtsp_port}/cam", "detect_every": 2, "blinks": True},
            {"name": "silent", "url": f"rtsp://admin:{PASSWORDS['silent']}@127.0.0.1:{silent_port}/live",
             "open_timeout": 2},
            {"name": "garbage", "url": f"rtsp://admin:{PASSWORDS['garbage']}@127.0.0.1:{garbage_port}/live",
             "open_timeout": 2},
        ],
        "alerts": {"fake": {"on_threshold": 0.0, "off_threshold": 0.0, "min_seconds": 0.5, "cooldown_seconds": 3600},
                   "offline_after_seconds": 3, "pre_roll_seconds": 1.5, "post_roll_seconds": 1},
        "sinks": {"webhooks": [{"url": hook, "name": "hook", "timeout_seconds": 5, "backoff_seconds": 0.5,
                                "backoff_max_seconds": 2}]},
        "web": {"port": web_port},
        "model": {"detector": str(detector), "face_detector": "auto"},
        "storage": {"folder": str(storage)},
        "retry_seconds": 0.5,
        "retry_max_seconds": 2,
    }


@pytest.fixture(scope="module")
def live(rtsp_ready, tmp_path_factory, tiny_detector):
    folder = tmp_path_factory.mktemp("monitor-live")
    clip = small_clip(shared_file(HEAD), folder / "cam.mp4")
    storage = folder / "store"
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    found: dict = {"folder": folder, "storage": storage, "texts": {}}
    log = folder / "monitor.log"
    hook = WebhookReceiver().start()
    with CameraProxy(modes=("silent",)) as silent, CameraProxy(modes=("garbage",)) as garbage, rtsp_server({"cam": clip}) as rtsp:
        config_path = folder / "monitor.yaml"
        config_path.write_text(yaml.safe_dump(config(rtsp.port, silent.port, garbage.port, hook.url, web_port,
                                                     tiny_detector, storage)))
        monitor = MonitorProcess(config_path, log, storage)
        try:
            api = lambda: {c["name"]: c for c in json.loads(http("GET", base + "/api/cameras")[1])["cameras"]}
            # a fake alert raised for real, delivered to the webhook, its evidence on disk
            wait_until(lambda: monitor.process.process.poll() is None and [
                b for b in hook.bodies() if b["kind"] == "fake"], 120, what="a fake alert of cam")
            found["fake"] = [b for b in hook.bodies() if b["kind"] == "fake"][0]
            # the misbehaving cameras are down, with one line saying why, while cam streams
            down = ("offline", "reconnecting")
            wait_until(lambda: all(monitor.status().get(n, {}).get("health") in down
                                   and monitor.status()[n]["health_detail"] for n in ("silent", "garbage")),
                       30, what="silent and garbage down with a detail")
            found["status"] = monitor.status()
            wait_until(lambda: api()["cam"]["health"] == "streaming", 30, what="cam streaming")
            found["api_cameras"] = api()
            found["blinks"] = wait_until(lambda: [t["blinks_per_minute"] for t in api()["cam"]["tracks"]
                                                  if t["blinks_per_minute"] is not None], 30,
                                         what="a track of cam with its blinks a minute")
            # the dashboard and the alert list in a real browser
            found["dashboard_dom"], found["dashboard_png"] = _browse(folder, base + "/", "dashboard", api)
            found["alerts_dom"], found["alerts_png"] = _browse(folder, base + "/alerts?camera=cam", "alerts", api)
            # /metrics: scraped until cam has been streaming for a few seconds (fps is a 5 s window)
            def scraped():
                code, text = http("GET", base + "/metrics")
                samples = metric_samples(text)
                ok = code == 200 and (sample(samples, "dfstream_camera_fps", camera="cam") or 0) > 0 and sample(
                    samples, "dfstream_camera_health", camera="cam", state="streaming") == 1
                return (text, samples) if ok else None
            found["metrics_text"], found["metrics"] = wait_until(scraped, 30, what="cam's fps > 0 in /metrics")
            found["healthz"] = http("GET", base + "/healthz")
            # the web API: a camera added and one removed, cam's worker untouched; then SIGHUP
            frames = [monitor.status()["cam"]["frames"]]
            extra_url = f"rtsp://viewer:{PASSWORDS['extra']}@127.0.0.1:{silent.port}/extra"
            found["post"] = http("POST", base + "/api/cameras",
                                 {"name": "extra", "url": extra_url, "options": {"open_timeout": 2}})
            found["post_again"] = http("POST", base + "/api/cameras", {"name": "extra", "url": extra_url})
            found["after_post"] = set(api())
            frames.append(monitor.status()["cam"]["frames"])
            found["delete"] = http("DELETE", base + "/api/cameras/garbage")
            found["after_delete"] = set(api())
            found["overlay"] = storage / OVERLAY_NAME
            found["overlay_text"] = found["overlay"].read_text() if found["overlay"].is_file() else ""
            frames.append(monitor.status()["cam"]["frames"])
            reloads = monitor.log_text().count("reload:")
            monitor.signal(signal.SIGHUP)
            wait_until(lambda: monitor.log_text().count("reload:") > reloads, 30, what="the reload's log line")
            found["reload_line"] = monitor.log_text().split("reload:")[-1].splitlines()[0]
            found["after_reload"] = set(api())
            wait_until(lambda: monitor.status()["cam"]["frames"] > frames[-1], 30, what="cam's frames growing")
            frames.append(monitor.status()["cam"]["frames"])
            found["cam_frames"] = frames
            # removing a streaming camera stops its run (seconds): the server answers meanwhile
            wait_until(lambda: api()["cam"]["health"] == "streaming", 30, what="cam streaming again")
            answered: list[str] = []
            deleting = threading.Thread(target=lambda: answered.append(
                "DELETE %d" % http("DELETE", base + "/api/cameras/cam")[0]))
            deleting.start()
            time.sleep(0.3)  # the DELETE is in, the run stopping
            answered.append("healthz %d" % http("GET", base + "/healthz")[0])
            deleting.join(60)
            found["answered_during_delete"] = answered
            found["after_cam_delete"] = set(api())
            # every place a URL could leak, as a user or a scraper sees it
            found["texts"] = {
                "dashboard": found["dashboard_dom"], "alerts page": found["alerts_dom"],
                "all alerts page": http("GET", base + "/alerts")[1],
                "/api/cameras": http("GET", base + "/api/cameras")[1], "/api/alerts": http("GET", base + "/api/alerts")[1],
                "/metrics": http("GET", base + "/metrics")[1],
                "status.json": (storage / "status.json").read_text(),
            }
            found["exit_code"] = monitor.terminate()
            found["texts"]["log"] = monitor.log_text()
        except BaseException:
            print(log.read_text()[-6000:])
            raise
        finally:
            monitor.stop()
            hook.stop()
        found["silent_connections"], found["garbage_connections"] = silent.connections, garbage.connections
    return found


def _browse(folder: Path, url: str, name: str, api) -> tuple[str, object]:
    """(DOM after the page's script ran, screenshot) of ``url``; tried again (at most 3 times) while
    cam is not streaming at the moment of the shot (its RTSP session restarts with the clip)."""
    for _ in range(3):
        dom = chromium(folder, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = folder / f"{name}.png"
        result = chromium(folder, f"--screenshot={shot}", url)
        assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
        if 'data-camera="cam" data-health="streaming"' in dom.stdout or name != "dashboard":
            break
    return dom.stdout, cv2.imread(str(shot))


def _boxes(dom: str, img_class: str) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in box.split(","))
            for box in re.findall(rf'<img class="{img_class}"[^>]*data-box="([\d,]+)"', dom)]


def test_the_dashboard_of_a_running_monitor_shows_each_camera_live_with_its_health(live):
    dom = live["dashboard_dom"]
    for name in ("cam", "silent", "garbage"):
        assert re.search(rf'class="name">{name}<', dom), name
    assert 'data-camera="cam" data-health="streaming"' in dom
    assert re.search(r'data-camera="silent" data-health="(offline|reconnecting)"', dom)
    views = re.findall(r'<img class="view"[^>]*>', dom)
    cam_view = [v for v in views if "/cameras/cam/preview.jpg" in v]
    assert cam_view and 'data-loaded="1"' in cam_view[0], views  # the browser received cam's picture
    # in the screenshot: cam's tile is a picture of the camera, not an empty box
    box = [tuple(int(v) for v in b.split(",")) for b in re.findall(r'data-box="([\d,]+)"', cam_view[0])][0]
    looks, why = tile_looks_like_a_picture(live["dashboard_png"], box)
    assert looks, why
    assert live["fake"]["id"] in dom  # the latest alerts


def test_the_alert_list_of_a_camera_shows_the_real_alert_with_its_snapshot_loaded(live):
    dom, fake = live["alerts_dom"], live["fake"]
    assert f'data-alert="{fake["id"]}"' in dom
    assert "silent went offline" not in dom  # ?camera=cam: only cam's alerts
    row = dom[dom.index(f'data-alert="{fake["id"]}"'):]
    row = row[:row.index("</tr>")]
    assert 'class="thumb"' in row and 'data-loaded="1"' in row, row  # the browser decoded the snapshot
    boxes = _boxes(row, "thumb")
    assert boxes, row
    looks, why = tile_looks_like_a_picture(live["alerts_png"], boxes[0])
    assert looks, why
    for name in ("snapshot.jpg", "clip.mp4", "timeline.json"):
        assert f"/alerts/{fake['id']}/{name}" in row


def test_metrics_of_the_running_monitor_parse_and_count_what_happened(live):
    samples = live["metrics"]
    assert sample(samples, "dfstream_camera_fps", camera="cam") > 0
    assert sample(samples, "dfstream_camera_frames_total", camera="cam") > 0
    assert sample(samples, "dfstream_camera_health", camera="cam", state="streaming") == 1
    assert sample(samples, "dfstream_camera_health", camera="cam", state="offline") == 0
    assert sample(samples, "dfstream_camera_health", camera="silent", state="streaming") == 0
    assert sample(samples, "dfstream_camera_latency_seconds_count", camera="cam") > 0
    assert sample(samples, "dfstream_camera_latency_seconds_bucket", camera="cam", le="+Inf") > 0
    assert sample(samples, "dfstream_alerts_sent_total", sink="hook") >= 1
    assert sample(samples, "dfstream_camera_faces_total", camera="cam") > 0


def test_a_camera_with_blinks_true_shows_its_tracks_blinks_a_minute(live):
    assert all(isinstance(rate, float) and 0 <= rate < 200 for rate in live["blinks"])
    assert '"blinks_per_minute"' in live["texts"]["status.json"]


def test_healthz_answers_200_with_the_cameras_by_health(live):
    code, text = live["healthz"]
    body = json.loads(text)
    assert code == 200 and body["ok"] is True
    assert body["cameras"]["streaming"] >= 1 and body["cameras"]["offline"] + body["cameras"]["reconnecting"] >= 2


def test_a_silent_and_a_garbage_camera_are_down_with_a_one_line_detail_while_the_monitor_runs(live):
    assert live["silent_connections"] >= 1 and live["garbage_connections"] >= 1  # both were really tried
    for where in (live["status"], live["api_cameras"]):
        for name in ("silent", "garbage"):
            camera = where[name]
            assert camera["health"] in ("offline", "reconnecting"), camera
            assert camera["health_detail"] and "\n" not in camera["health_detail"], camera
            assert "admin" not in camera["url"] and "127.0.0.1" in camera["url"], camera["url"]
    # the healthy camera beside them streams, and kept counting frames until the end
    assert live["api_cameras"]["cam"]["health"] == "streaming"
    assert live["cam_frames"][-1] > live["status"]["cam"]["frames"] > 0
    assert live["exit_code"] == 0  # it kept running beside them, and stopped cleanly


def test_camera_passwords_show_nowhere(live):
    assert live["texts"]["log"] and len(live["texts"]) == 8
    for where, text in live["texts"].items():
        for password in PASSWORDS.values():
            assert password not in text, f"{password} in {where}"


def test_cameras_added_and_removed_through_the_api_survive_a_reload(live):
    assert live["post"][0] == 200, live["post"]
    assert live["post_again"][0] == 400 and "already exists" in live["post_again"][1]
    assert live["delete"][0] == 200, live["delete"]
    assert live["after_post"] == {"cam", "silent", "garbage", "extra"}
    assert live["after_delete"] == {"cam", "silent", "extra"}
    assert live["after_reload"] == {"cam", "silent", "extra"}, "SIGHUP undid the API's changes"
    assert "0 added, 0 removed, 0 changed" in live["reload_line"]
    overlay = yaml.safe_load(live["overlay_text"])
    assert [c["name"] for c in overlay["cameras"]] == ["extra"] and overlay["removed"] == ["garbage"]
    assert stat.S_IMODE(live["overlay"].stat().st_mode) == 0o600  # it holds the camera's password


def test_the_other_cameras_workers_kept_running_through_the_api_changes_and_reload(live):
    frames = live["cam_frames"]
    assert frames == sorted(frames) and frames[-1] > frames[0], frames  # never reset: not restarted


def test_the_server_answers_while_a_streaming_camera_removed_through_the_api_stops(live):
    assert live["answered_during_delete"] == ["healthz 200", "DELETE 200"], live["answered_during_delete"]
    assert live["after_cam_delete"] == {"silent", "extra"}
