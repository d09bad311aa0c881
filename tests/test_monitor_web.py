"""The monitor's web server: routes, /metrics and /healthz, the token, uploads, evidence.

Route tests drive the app with Starlette's test client; what depends on a real socket (binding,
the token over HTTP, an upload scored by the real detector) runs the server with ``serve``."""
from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from monitor.auth import check_token, hash_token, new_token
from monitor.web import WebConfigError, WebOptions, build_app, serve
from tests.conftest import needs_shared_data, shared
from tests.monitor_fixtures import FACE_IMAGE, filled_state

pytestmark = needs_shared_data


@pytest.fixture(scope="module")
def alerts_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("alerts")


@pytest.fixture
def state(alerts_dir):
    return filled_state(alerts_dir)


@pytest.fixture
def client(state):
    return TestClient(build_app(state, WebOptions(), scorer=lambda path: pytest.fail("nothing should be scored")))


class RecordingControl:
    """The service's side of MonitorControl, recording what the web server asked."""

    def __init__(self):
        self.calls = []

    def reload(self) -> str:
        self.calls.append(("reload",))
        return "reloaded: 2 cameras"

    def add_camera(self, name: str, url: str, options: dict) -> str:
        if name == "front-door":
            raise ValueError("camera 'front-door' exists already")
        self.calls.append(("add", name, url, options))
        return f"added {name} (rtsp://user:pw@198.51.100.7/a)"

    def remove_camera(self, name: str) -> str:
        self.calls.append(("remove", name))
        return f"removed {name}"


# -- pages and API -------------------------------------------------------------------------------

def test_dashboard_shows_both_cameras_with_redacted_urls_and_health(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "front-door" in page.text and "lobby-cam" in page.text
    assert "hunter2" not in page.text and "s3cret" not in page.text and "viewer:pw" not in page.text
    assert "rtsp://***@192.0.2.10:554/stream1" in page.text
    assert 'data-health="offline"' in page.text and 'data-health="streaming"' in page.text


def test_api_cameras_lists_figures_and_tracks(client):
    cameras = {c["name"]: c for c in client.get("/api/cameras").json()["cameras"]}
    door = cameras["front-door"]
    assert (door["health"], door["fps"], door["latency_p99_ms"], door["dropped"], door["reconnects"]) == \
        ("streaming", 14.8, 96.5, 3, 1)
    assert cameras["lobby-cam"]["tracks"] == [{"id": 7, "score": 0.91, "verdict": "fake", "blinks_per_minute": 0.0}]
    assert cameras["lobby-cam"]["url"] == "rtsp://192.0.2.11/live?token=***"


def test_preview_is_the_cameras_latest_jpeg(client, state):
    response = client.get("/cameras/front-door/preview.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == state.preview("front-door")
    assert client.get("/cameras/nobody/preview.jpg").status_code == 404


def test_alerts_are_newest_first_and_filtered_by_camera(client):
    alerts = client.get("/api/alerts").json()["alerts"]
    assert [a["camera"] for a in alerts] == ["lobby-cam", "front-door"]
    assert alerts[0]["evidence"]["clip.mp4"].endswith("/clip.mp4")
    only = client.get("/api/alerts", params={"camera": "front-door"}).json()["alerts"]
    assert [a["kind"] for a in only] == ["offline"]
    page = client.get("/alerts", params={"camera": "lobby-cam"})
    assert "track 7" in page.text and "went offline" not in page.text
    assert "webhook: sent" in page.text and "mqtt: queued" in page.text
    assert 'class="thumb"' in page.text


def test_evidence_is_served_only_for_files_the_alert_names(client, state, alerts_dir):
    alert = state.alerts(camera="lobby-cam")[0]
    clip = client.get(f"/alerts/{alert.id}/clip.mp4")
    assert clip.status_code == 200 and clip.content[4:8] == b"ftyp"
    snapshot = client.get(f"/alerts/{alert.id}/snapshot.jpg")
    assert snapshot.content[:3] == b"\xff\xd8\xff"
    (alerts_dir / "secret.txt").write_text("not evidence")
    for path in (f"/alerts/{alert.id}/timeline.json", f"/alerts/{alert.id}/..%2Fsecret.txt",
                 f"/alerts/{alert.id}/%2Fetc%2Fpasswd", "/alerts/..%2F..%2Fetc/passwd", "/alerts/nope/clip.mp4"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"not evidence" not in response.content and b"root:" not in response.content


def test_control_endpoints_call_the_service_and_pass_its_refusals_on(client, state):
    assert client.post("/api/reload").status_code == 503  # no control yet
    state.control = control = RecordingControl()
    answer = client.post("/api/cameras", json={"name": "garage", "url": "rtsp://u:p@198.51.100.7/a",
                                               "options": {"threshold": 0.7}})
    assert answer.status_code == 200 and "user:pw" not in answer.json()["message"]
    refused = client.post("/api/cameras", json={"name": "front-door", "url": "rtsp://x/y"})
    assert refused.status_code == 400 and refused.json()["error"] == "camera 'front-door' exists already"
    assert client.post("/api/cameras", json={"url": "rtsp://x/y"}).status_code == 400
    assert client.post("/api/cameras", content=b"not json").status_code == 400
    assert client.delete("/api/cameras/garage").json()["message"] == "removed garage"
    assert client.post("/api/reload").json()["message"] == "reloaded: 2 cameras"
    assert control.calls == [("add", "garage", "rtsp://u:p@198.51.100.7/a", {"threshold": 0.7}),
                             ("remove", "garage"), ("reload",)]


# -- metrics and health ----------------------------------------------------------------------------

def test_metrics_are_the_monitor_registry_in_prometheus_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    fps = {s.labels["camera"]: s.value for s in families["dfstream_camera_fps"].samples}
    assert fps == {"front-door": 14.8, "lobby-cam": 0.0}
    frames = {s.labels["camera"]: s.value for s in families["dfstream_camera_frames"].samples
              if s.name == "dfstream_camera_frames_total"}
    assert frames == {"front-door": 1200.0, "lobby-cam": 300.0}
    health = {(s.labels["camera"], s.labels["state"]) for s in families["dfstream_camera_health"].samples if s.value == 1}
    assert health == {("front-door", "streaming"), ("lobby-cam", "offline")}
    counts = [s for s in families["dfstream_camera_latency_seconds"].samples
              if s.name.endswith("_count") and s.labels["camera"] == "front-door"]
    assert counts[0].value == 1.0


def test_healthz_counts_cameras_by_health(client):
    body = client.get("/healthz").json()
    assert body["ok"] is True and body["uptime_s"] >= 0
    assert body["cameras"]["streaming"] == 1 and body["cameras"]["offline"] == 1


# -- the token -------------------------------------------------------------------------------------

def test_a_token_hash_accepts_its_token_only_and_differs_each_time():
    token = new_token()
    stored = hash_token(token)
    assert token not in stored and stored != hash_token(token)  # salted
    assert check_token(token, stored)
    assert not check_token(token + "x", stored) and not check_token("", stored) and not check_token(None, stored)
    with pytest.raises(ValueError, match="scrypt"):
        check_token(token, "abc123")


def test_a_non_loopback_bind_without_a_token_refuses_to_start(state):
    for address in ("0.0.0.0", "::", "example.org", ""):
        with pytest.raises(WebConfigError, match="no token is set") as error:
            serve(state, WebOptions(bind=address, port=0))
        assert "\n" not in str(error.value)


def test_a_bad_token_hash_refuses_to_start(state):
    with pytest.raises(WebConfigError, match="token_hash"):
        serve(state, WebOptions(port=0, token_hash="sha256:abc"))


def test_with_a_token_every_page_api_and_metrics_need_it_over_http(state):
    token = new_token()
    server = serve(state, WebOptions(bind="0.0.0.0", port=0, token_hash=hash_token(token)))
    try:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base, follow_redirects=False, timeout=10) as http:
            for path in ("/", "/alerts", "/check", "/api/cameras", "/api/alerts", "/metrics",
                         "/cameras/front-door/preview.jpg"):
                assert http.get(path).status_code == 401, path
            assert http.post("/api/reload").status_code == 401
            assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.get("/healthz").status_code == 200  # open for load balancers
            bearer = {"Authorization": f"Bearer {token}"}
            for path in ("/", "/api/cameras", "/metrics"):
                assert http.get(path, headers=bearer).status_code == 200, path
            assert "front-door" in http.get("/api/cameras", headers=bearer).text
            assert http.post("/login", data={"token": "wrong", "next": "/"}).status_code == 401
            login = http.post("/login", data={"token": token, "next": "//evil.example/"})
            assert login.status_code == 303 and login.headers["location"] == "/"  # never off this server
            assert "httponly" in login.headers["set-cookie"].lower()
            assert http.get("/alerts").status_code == 200  # the login cookie is kept by the client
    finally:
        server.stop()
    assert not server.running


# -- uploads ---------------------------------------------------------------------------------------

def test_an_oversize_upload_is_refused_with_413(state):
    client = TestClient(build_app(state, WebOptions(max_upload_mb=1), scorer=lambda p: pytest.fail("scored")))
    big = b"\xff\xd8\xff" + bytes(2 * 1024 * 1024)
    api = client.post("/api/check", files={"file": ("big.jpg", big, "image/jpeg")})
    assert api.status_code == 413 and "limit of 1 MB" in api.json()["error"]
    page = client.post("/check", files={"file": ("big.jpg", big, "image/jpeg")})
    assert page.status_code == 413 and "limit of 1 MB" in page.text


def test_a_text_file_named_jpg_is_refused_with_415(client, tmp_path):
    fake = tmp_path / "notes.jpg"
    fake.write_text("shopping list: eggs, milk\n" * 20)
    with fake.open("rb") as f:
        response = client.post("/check", files={"file": ("notes.jpg", f, "image/jpeg")})
    assert response.status_code == 415 and "not an image or a video" in response.text
    with fake.open("rb") as f:
        assert client.post("/api/check", files={"file": ("notes.mp4", f, "video/mp4")}).status_code == 415


def test_a_real_image_gets_a_verdict_from_the_default_detector_over_http(state):
    server = serve(state, WebOptions(port=0))
    try:
        with open(shared(FACE_IMAGE), "rb") as f:
            response = httpx.post(f"{server.url}/check", files={"file": ("face.jpg", f, "image/jpeg")}, timeout=120)
        assert response.status_code == 200
        assert 'id="verdict"' in response.text and ("REAL" in response.text or "FAKE" in response.text)
        with open(shared(FACE_IMAGE), "rb") as f:
            result = httpx.post(f"{server.url}/api/check", files={"file": ("face.jpg", f)}, timeout=120).json()
        assert result["type"] == "image" and result["verdict"] in ("real", "fake") and 0 <= result["score"] <= 1
    finally:
        server.stop()


def test_a_video_is_recognised_by_its_content_whatever_its_name(client, state, tmp_path):
    scored = []
    app = build_app(state, WebOptions(), scorer=lambda path: scored.append(path.suffix) or {
        "verdict": "real", "score": 0.1, "threshold": 0.5, "faces": [], "model": "m", "frames_with_faces": 1})
    clip = state.evidence_path(state.alerts(camera="lobby-cam")[0].id, "clip.mp4")
    with clip.open("rb") as f:
        result = TestClient(app).post("/api/check", files={"file": ("holiday.jpg", f)}).json()
    assert result["type"] == "video" and scored == [".mp4"]


# -- the command line ------------------------------------------------------------------------------

def test_monitor_token_prints_a_token_and_a_hash_that_accepts_it():
    from tests.conftest import run_dfstream

    result = run_dfstream("monitor-token")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    assert len(lines["token"]) >= 40 and lines["token"] not in lines["token_hash"]
    assert check_token(lines["token"], lines["token_hash"])


def test_a_chunked_upload_that_never_says_its_size_is_refused_with_413(state):
    server = serve(state, WebOptions(port=0, max_upload_mb=1), scorer=lambda p: pytest.fail("scored"))

    def body():  # a multipart body in chunks, no Content-Length: the server must count
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n\r\n\xff\xd8\xff"
        for _ in range(64):
            yield bytes(64 * 1024)
        yield b"\r\n--b--\r\n"

    try:
        response = httpx.post(f"{server.url}/api/check", content=body(), timeout=30,
                              headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413 and "limit of 1 MB" in response.json()["error"]
    finally:
        server.stop()
