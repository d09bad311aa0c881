"""The monitor's web server: the dashboard, the alert list, the upload check, a JSON API,
``/metrics`` for Prometheus and ``/healthz``.

It only reads :class:`monitor.state.MonitorState` and asks the service for changes through
``state.control`` (503 while there is none). Starlette serves it, under uvicorn, from a thread
of the monitor's process: ``serve(state, config)`` returns a handle with ``.port``, ``.url`` and
``.stop()``.

Security: it binds 127.0.0.1 by default and refuses any other address unless a token is set
(``token_hash``, the hash from :mod:`monitor.auth`); with a token every page, the API and
``/metrics`` need ``Authorization: Bearer <token>`` or the session cookie the login form sets
(``/healthz`` stays open, for load balancers). URLs are redacted again on the way out; evidence
is served only for files the state names; uploads are limited in size and must really decode
as an image or a video.
"""
from __future__ import annotations

import datetime as _dt
import logging
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import quote

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from monitor.auth import TokenChecker, check_web_settings
from monitor.state import Alert, CameraStatus, MonitorState
from pipeline.health import Health
from pipeline.urls import redact

log = logging.getLogger(__name__)

SESSION_COOKIE = "dfstream_session"
MB = 1024 * 1024
MULTIPART_SLACK = 64 * 1024  # bytes a form's boundaries and headers add around the uploaded file
OPEN_PATHS = {"/healthz", "/login"}  # reachable without the token

# health -> colour of its badge and of the card's top band (the dashboard's at-a-glance view)
HEALTH_COLOURS = {
    Health.STARTING.value: "#7a869a",
    Health.STREAMING.value: "#1f9d55",
    Health.STALLED.value: "#e8a317",
    Health.RECONNECTING.value: "#e86f17",
    Health.OFFLINE.value: "#d0312d",
    Health.BLOCKED.value: "#8e44ad",
}


class WebSettings(Protocol):
    """What the server needs of the monitor's web config (``monitor.config.WebConfig``)."""

    bind: str
    port: int
    token_hash: str | None
    max_upload_mb: int


@dataclass
class WebOptions:
    """A :class:`WebSettings` of its own, for tests and for running the server alone."""

    bind: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (the handle's .port says which)
    token_hash: str | None = None  # monitor.auth.hash_token of the token; None: no token (loopback only)
    max_upload_mb: int = 50


class WebConfigError(ValueError):
    pass



def check_settings(config: WebSettings) -> None:
    """One-line WebConfigError for settings the server must not start with."""
    try:
        check_web_settings(config)
    except ValueError as exc:
        raise WebConfigError(str(exc)) from None
    if int(config.max_upload_mb) < 1:
        raise WebConfigError(f"web.max_upload_mb {config.max_upload_mb} must be at least 1")


# -- what the pages and the API show --------------------------------------------------------------

def camera_view(status: CameraStatus) -> dict:
    health = status.health.value if isinstance(status.health, Health) else str(status.health)
    return {
        "name": status.name,
        "url": redact(status.url),
        "health": health,
        "health_colour": HEALTH_COLOURS.get(health, "#7a869a"),
        "health_since": status.health_since,
        "health_detail": redact(status.health_detail),
        "fps": round(status.fps, 2),
        "latency_p50_ms": None if status.latency_p50_ms is None else round(status.latency_p50_ms, 1),
        "latency_p99_ms": None if status.latency_p99_ms is None else round(status.latency_p99_ms, 1),
        "frames": status.frames,
        "dropped": status.dropped,
        "reconnects": status.reconnects,
        "faces": status.faces,
        "tracks": [{"id": track, "score": None if seen.score is None else round(seen.score, 3), "verdict": seen.verdict,
                    "blinks_per_minute": seen.blinks_per_minute}
                   for track, seen in sorted(status.tracks.items())],
    }


def alert_view(alert: Alert) -> dict:
    view = asdict(alert)
    view["message"] = redact(alert.message)
    view["evidence"] = {name: f"/alerts/{quote(alert.id, safe='')}/{quote(name, safe='')}"
                        for name in sorted(alert.evidence)}
    return view


def _uptime_s(state: MonitorState, server_started: float) -> float:
    if state.started:
        try:
            started = _dt.datetime.fromisoformat(state.started.replace("Z", "+00:00")).timestamp()
            return max(0.0, time.time() - started)
        except ValueError:
            pass
    return time.time() - server_started


# -- uploads ---------------------------------------------------------------------------------------

class UploadTooLarge(Exception):
    pass


class UnsupportedMedia(Exception):
    pass


class UploadLimit:
    """ASGI middleware: reading the body of a POST to an upload path raises UploadTooLarge past
    ``limit`` bytes, whether or not the client said how long it is (a chunked upload says nothing);
    the endpoint turns it into a 413."""

    def __init__(self, app, limit: int, paths: tuple[str, ...]):
        self.app, self.limit, self.paths = app, limit, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise UploadTooLarge()
            return message

        await self.app(scope, counted, send)


_IMAGE_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"),
                (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def media_kind(path: Path) -> tuple[str, str]:
    """("image" | "video", the file suffix the scorer should see), decided by decoding the file, not
    by its name; UnsupportedMedia when it decodes as neither."""
    import cv2
    import numpy as np

    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is not None and image.size:
        head = data[:12]
        suffix = next((s for magic, s in _IMAGE_MAGIC if head.startswith(magic)), None)
        if suffix is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            suffix = ".webp"
        return "image", suffix or ".png"  # .png: rewritten losslessly below (other formats cv2 reads)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnsupportedMedia("it has no video stream")
            for _ in container.decode(video=0):
                name = container.format.name.split(",")[0]
                return "video", {"matroska": ".mkv", "avi": ".avi", "mpeg": ".mpg", "flv": ".flv"}.get(name, ".mp4")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise UnsupportedMedia(f"its content decodes as neither ({type(exc).__name__})") from None
    raise UnsupportedMedia("its video stream has no frame that decodes")


def _default_scorer(path: Path) -> dict:
    """P(fake) and a verdict for one image or video, through ``dfstream predict``'s code and the
    default detector."""
    from train.predict import predict

    return predict(path)


# -- the server ------------------------------------------------------------------------------------

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("monitor", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),  # names and URLs come from users
)
_TEMPLATES.filters["q"] = lambda text: quote(str(text), safe="")


def build_app(state: MonitorState, config: WebSettings, scorer: Callable[[Path], dict] | None = None) -> Starlette:
    """The ASGI app (served by :func:`serve`; tests may drive it directly)."""
    check_settings(config)
    checker = TokenChecker(config.token_hash) if config.token_hash else None
    sessions: set[str] = set()  # login cookies handed out (in memory: a restart asks again)
    sessions_lock = threading.Lock()
    upload_limit = int(config.max_upload_mb) * MB
    score = scorer or _default_scorer
    server_started = time.time()
    score_lock = threading.Lock()  # one upload scored at a time: each loads the detector and its threads

    def page(name: str, status_code: int = 200, **values) -> HTMLResponse:
        html = _TEMPLATES.get_template(name).render(auth=checker is not None, colours=HEALTH_COLOURS, **values)
        return HTMLResponse(html, status_code=status_code)

    def authorised(request: Request) -> bool:
        if checker is None:
            return True
        header = request.headers.get("authorization", "")
        if header[:7].lower() == "bearer " and checker(header[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        with sessions_lock:
            return bool(cookie) and cookie in sessions

    def api_error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    # -- pages
    async def dashboard(request: Request):
        cameras = [camera_view(c) for c in sorted(state.cameras(), key=lambda c: c.name)]
        alerts = [alert_view(a) for a in state.alerts(limit=5)]
        return page("dashboard.html", cameras=cameras, alerts=alerts, started=state.started)

    async def alerts_page(request: Request):
        camera = request.query_params.get("camera") or None
        alerts = [alert_view(a) for a in state.alerts(camera=camera, limit=500)]
        names = sorted({c.name for c in state.cameras()} | {a["camera"] for a in alerts})
        return page("alerts.html", alerts=alerts, camera=camera, names=names)

    async def preview(request: Request):
        jpeg = state.preview(request.path_params["name"])
        if jpeg is None:
            return Response("no picture yet", status_code=404, media_type="text/plain")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def evidence(request: Request):
        # only a file the state names for this alert: no path from the request reaches the disk
        path = state.evidence_path(request.path_params["alert_id"], request.path_params["name"])
        if path is None:
            return Response("no such evidence", status_code=404, media_type="text/plain")
        return FileResponse(path)

    async def check_page(request: Request):
        return page("check.html", max_upload_mb=config.max_upload_mb)

    async def _checked(request: Request) -> tuple[int, dict]:
        """(status, result or {"error": ...}) of one uploaded file."""
        try:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > upload_limit + MULTIPART_SLACK:
                raise UploadTooLarge()  # said so before sending it: not a byte read
            async with request.form(max_files=1, max_fields=4) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    return 400, {"error": "no file: send it as the form field 'file'"}
                with tempfile.TemporaryDirectory(prefix="dfs-check-") as folder:
                    raw = Path(folder) / "upload"
                    size = 0
                    with raw.open("wb") as out:
                        while chunk := await upload.read(MB):
                            size += len(chunk)
                            if size > upload_limit:
                                raise UploadTooLarge()
                            out.write(chunk)
                    from starlette.concurrency import run_in_threadpool

                    return await run_in_threadpool(_score_file, raw, upload.filename or "upload")
        except UploadTooLarge:
            return 413, {"error": f"the upload is larger than the limit of {config.max_upload_mb} MB"}
        except UnsupportedMedia as exc:
            return 415, {"error": f"not an image or a video file: {exc}"}

    def _score_file(raw: Path, filename: str) -> tuple[int, dict]:
        kind, suffix = media_kind(raw)
        named = raw.with_name("upload" + suffix)
        if kind == "image" and suffix == ".png" and not raw.read_bytes().startswith(b"\x89PNG"):
            import cv2
            import numpy as np

            cv2.imwrite(str(named), cv2.imdecode(np.frombuffer(raw.read_bytes(), np.uint8), cv2.IMREAD_COLOR))
        else:
            raw.rename(named)
        with score_lock:
            result = score(named)
        result = {k: v for k, v in result.items() if k != "media"}  # a temporary path, of no use to anyone
        result["file"] = Path(filename).name
        result["type"] = kind
        return 200, result

    async def check_upload(request: Request):
        status, result = await _checked(request)
        if status != 200:
            return page("check.html", status_code=status, max_upload_mb=config.max_upload_mb, error=result["error"])
        return page("check_result.html", result=result)

    async def login_page(request: Request):
        return page("login.html", next=_safe_next(request.query_params.get("next")))

    async def login(request: Request):
        async with request.form(max_files=0, max_fields=4) as form:
            token = str(form.get("token", ""))
            target = _safe_next(str(form.get("next", "/")))
        if checker is None:
            return RedirectResponse(target, status_code=303)
        if not checker(token):
            return page("login.html", status_code=401, next=target, error="wrong token")
        session = secrets.token_urlsafe(32)
        with sessions_lock:
            sessions.add(session)
        response = RedirectResponse(target, status_code=303)
        # HttpOnly: no script reads it; SameSite=Strict: no other site's form can post with it
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")
        return response

    async def logout(request: Request):
        with sessions_lock:
            sessions.discard(request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- metrics and health
    async def metrics(request: Request):
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request):
        by_health = {h.value: 0 for h in Health}
        for camera in state.cameras():
            health = camera_view(camera)["health"]
            by_health[health] = by_health.get(health, 0) + 1
        return JSONResponse({"ok": True, "uptime_s": round(_uptime_s(state, server_started), 1),
                             "started": state.started, "cameras": by_health})

    # -- the JSON API
    async def api_cameras(request: Request):
        cameras = sorted(state.cameras(), key=lambda c: c.name)
        return JSONResponse({"cameras": [camera_view(c) for c in cameras]})

    async def api_alerts(request: Request):
        camera = request.query_params.get("camera") or None
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", 100))))
        except ValueError:
            return api_error(400, "limit must be a whole number")
        return JSONResponse({"alerts": [alert_view(a) for a in state.alerts(camera=camera, limit=limit)]})

    async def _control(call: Callable[..., str], *args) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        if state.control is None:
            return api_error(503, "the monitor service is not taking changes (no control)")
        try:
            # in a worker thread: stopping a camera's run takes seconds, and the pages, /metrics
            # and /healthz must keep answering meanwhile
            return JSONResponse({"message": redact(await run_in_threadpool(call, state.control, *args))})
        except ValueError as exc:
            return api_error(400, redact((str(exc).strip().splitlines() or ["refused"])[0]))

    async def api_add_camera(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return api_error(400, "the body must be JSON: {\"name\": ..., \"url\": ..., \"options\": {...}}")
        if not isinstance(body, dict):
            return api_error(400, "the body must be a JSON object with name, url and options")
        name, url, options = body.get("name"), body.get("url"), body.get("options", {})
        if not isinstance(name, str) or not name.strip():
            return api_error(400, "name: a camera needs a non-empty name")
        if not isinstance(url, str) or not url.strip():
            return api_error(400, "url: a camera needs its stream URL")
        if not isinstance(options, dict):
            return api_error(400, "options must be a JSON object")
        return await _control(lambda control, *a: control.add_camera(*a), name.strip(), url.strip(), options)

    async def api_remove_camera(request: Request):
        return await _control(lambda control, name: control.remove_camera(name), request.path_params["name"])

    async def api_reload(request: Request):
        return await _control(lambda control: control.reload())

    async def api_check(request: Request):
        status, result = await _checked(request)
        return JSONResponse(result, status_code=status)

    routes = [
        Route("/", dashboard),
        Route("/alerts", alerts_page),
        Route("/cameras/{name}/preview.jpg", preview),
        Route("/alerts/{alert_id}/{name}", evidence),
        Route("/check", check_page, methods=["GET"]),
        Route("/check", check_upload, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/api/cameras", api_cameras, methods=["GET"]),
        Route("/api/cameras", api_add_camera, methods=["POST"]),
        Route("/api/cameras/{name}", api_remove_camera, methods=["DELETE"]),
        Route("/api/alerts", api_alerts),
        Route("/api/reload", api_reload, methods=["POST"]),
        Route("/api/check", api_check, methods=["POST"]),
    ]
    async def require_token(request: Request, call_next):
        if request.url.path in OPEN_PATHS or authorised(request):
            response = await call_next(request)
        elif request.url.path.startswith("/api/") or request.url.path == "/metrics" or request.method != "GET":
            response = JSONResponse({"error": "a token is needed: send 'Authorization: Bearer <token>'"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        else:  # a person with a browser: the login form, still a 401
            response = page("login.html", status_code=401, next=_safe_next(request.url.path))
            response.headers["WWW-Authenticate"] = "Bearer"
        # pages of a camera monitor are not for framing by other sites or for caches in between
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return Starlette(routes=routes, middleware=[
        Middleware(BaseHTTPMiddleware, dispatch=require_token),
        Middleware(UploadLimit, limit=upload_limit + MULTIPART_SLACK, paths=("/check", "/api/check")),
    ])


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (never //host or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class WebServer:
    """A running server: ``.port``, ``.url``, ``.stop()``."""

    def __init__(self, server, thread: threading.Thread, host: str, port: int):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        # a wildcard bind is reached here through loopback
        local = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        shown = f"[{local}]" if ":" in local else local
        self.url = f"http://{shown}:{port}"

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def _bound_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is a one-line error in the caller."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise WebConfigError(f"web.bind {host!r} is not an address of this host ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise WebConfigError(f"web: cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(state: MonitorState, config: WebSettings, scorer: Callable[[Path], dict] | None = None) -> WebServer:
    """Start the web server in a thread; returns once it accepts connections.
    WebConfigError (one line) for settings it must not start with or an address it cannot take."""
    import uvicorn

    app = build_app(state, config, scorer)
    sock = _bound_socket(config.bind, int(config.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_graceful_shutdown=2))
    server.install_signal_handlers = lambda: None  # the monitor's main thread owns the signals
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dfstream-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise WebConfigError(f"web: the server on {config.bind}:{port} did not start")
        time.sleep(0.02)
    return WebServer(server, thread, config.bind, port)
