"""The monitor's configuration file (YAML) as typed dataclasses.

:func:`load_config` reads and checks the whole file; anything wrong raises
:class:`ConfigError` with one line naming the key (``cameras[1].url: missing``), which the
command line prints before exiting with status 2. Defaults live here, once, as the
dataclass fields; ``monitor.example.yaml`` documents every key.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from monitor.auth import check_web_settings
from pipeline.config import ReconnectConfig, VerdictRule

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # a camera name is a folder name and an MQTT topic level


OVERLAY_NAME = "cameras.api.yaml"  # in the storage folder, next to the alerts: the service's own writable place


class ConfigError(ValueError):
    """One line: ``where: what is wrong``."""


@dataclass
class CameraConfig:
    name: str
    url: str
    enabled: bool = True
    detect_every: int = 3  # face detection on every k-th frame, tracked in between (dfstream run --detect-every)
    classify_every: int | None = None  # None: detect_every
    threshold: float | None = None  # P(fake) of a fake verdict; None: the model's own
    detect_size: int = 640
    min_face_score: float = 0.8
    open_timeout: float = 10.0  # seconds a camera has to answer a probe or the source stage
    max_latency_ms: float = 1000.0
    # read each face's eyes: its blinks a minute in the events (dfstream run --blinks); None: when blinks
    # are part of the model's score (the default detector's) and the landmark model is installed
    blinks: bool | None = None


@dataclass
class FakeRule:
    """A track turns fake when its smoothed P(fake) stays >= on_threshold for min_seconds; it
    re-arms only once it has fallen below off_threshold (hysteresis), and fires again no sooner
    than cooldown_seconds after its last alert.

    Left unset, the thresholds follow the verdict the camera's run draws, whatever the model's
    calibration: on where the box turns red (the camera's threshold + the model's uncertain band), off
    at the threshold itself.  Fixed numbers mean nothing across models: the default detector's
    calibrated P(fake) lies between about 0.33 and 0.71, so an alert at 0.8 could never fire."""

    on_threshold: float | None = None
    off_threshold: float | None = None
    min_seconds: float = 2.0
    cooldown_seconds: float = 300.0

    def for_verdicts(self, verdict: VerdictRule) -> "FakeRule":
        """This rule in numbers for a run that draws its verdicts by ``verdict``: the thresholds left unset
        filled in (on where its box turns red, off at its threshold)."""
        on = self.on_threshold if self.on_threshold is not None else verdict.fake_from
        off = self.off_threshold if self.off_threshold is not None else verdict.threshold
        if self.off_threshold is None:
            off = min(off, on)  # an explicit on_threshold under the model's threshold keeps its hysteresis sane
        elif self.on_threshold is None:
            on = max(on, off)
        return replace(self, on_threshold=on, off_threshold=off)


@dataclass
class AlertsConfig:
    fake: FakeRule = field(default_factory=FakeRule)
    # a camera reconnecting, offline or stalled this long is reported offline (and online when it is back)
    offline_after_seconds: float = 30.0
    pre_roll_seconds: float = 5.0  # of the evidence clip, before the moment the alert fired
    post_roll_seconds: float = 3.0  # ... and after it


@dataclass
class WebhookConfig:
    url: str
    name: str = ""  # in logs, metrics and the alert's deliveries; default webhook<index>
    timeout_seconds: float = 10.0
    retries: int = 0  # 0: retried until delivered (the alert waits on disk); N: failed after N+1 tries
    backoff_seconds: float = 2.0  # first retry after this, doubling up to backoff_max_seconds
    backoff_max_seconds: float = 300.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class MqttConfig:
    url: str  # mqtt://host:1883
    name: str = "mqtt"
    topic_prefix: str = "dfstream"
    username: str | None = None
    password: str | None = None
    client_id: str | None = None  # None: dfstream-monitor-<hostname>
    timeout_seconds: float = 10.0  # for the broker's PUBACK
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 300.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


@dataclass
class SinksConfig:
    webhooks: list[WebhookConfig] = field(default_factory=list)
    mqtt: MqttConfig | None = None


@dataclass
class WebConfig:
    """The dashboard's server (monitor.web.serve(state, config))."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 8080
    token_hash: str | None = None  # monitor.auth.hash_token of the bearer token (dfstream monitor-token); None: loopback only
    max_upload_mb: int = 50


@dataclass
class ModelConfig:
    detector: str = "detector"  # registry name or file, as dfstream run --model
    engine: str = "auto"
    face_detector: str = "auto"  # as dfstream run --face-detector


@dataclass
class StorageConfig:
    folder: str = "dfstream-monitor"  # alert evidence (alerts/<id>/), the delivery queue and the events
    events: bool = False  # also keep each camera's events file (events/<camera>.jsonl, one per run)

    @property
    def alerts_dir(self) -> Path:
        return Path(self.folder) / "alerts"

    @property
    def queue_path(self) -> Path:
        return Path(self.folder) / "outbox.sqlite"

    @property
    def events_dir(self) -> Path:
        return Path(self.folder) / "events"

    @property
    def overlay_path(self) -> Path:
        """The cameras added and removed through the web API (see :func:`merge_overlay`)."""
        return Path(self.folder) / OVERLAY_NAME


@dataclass
class MonitorConfig:
    cameras: list[CameraConfig]
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    web: WebConfig | None = None  # no web: section, no server
    model: ModelConfig = field(default_factory=ModelConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # a camera that is down, lost or stalled is tried again after retry_seconds, doubling (with
    # jitter) up to retry_max_seconds, forever: inside its run (the source reconnects) and, should
    # the run itself end, by the service (see reconnect())
    retry_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    stall_seconds: float = 5.0  # connected but no frame for this long: stalled, reconnect
    publish_fps: float = 5.0  # annotated frames per second each run sends to the service (preview, clips)
    source: str = ""  # the file it was read from

    def reconnect(self) -> ReconnectConfig:
        """The retry settings as the pipeline's reconnect settings: one schedule for both."""
        return ReconnectConfig(initial_s=self.retry_seconds, max_s=self.retry_max_seconds,
                               stall_timeout_s=self.stall_seconds)

    def camera(self, name: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.name == name), None)


# -- checking ------------------------------------------------------------------------------


def _type_name(kind) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        kind, str(kind))


def _value(where: str, value, kind):
    """``value`` checked against a field's type annotation (a string such as ``float | None``)."""
    optional = "None" in kind
    base = kind.replace("| None", "").strip()
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be empty")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, not {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, not {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: must be a number, not {value!r}")
        return float(value)
    if base == "str":
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: must be a string, not {value!r}")
        return str(value)
    if base.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
    raise AssertionError(f"unhandled field type {kind}")


def _section(where: str, data, cls, nested: dict | None = None, required: tuple[str, ...] = ()):
    """A dataclass from a mapping: unknown keys, missing required keys and wrong types named."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values")
    nested = nested or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{_join(where, key)}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if name in required:
                raise ConfigError(f"{_join(where, name)}: missing")
            continue
        if name in nested:
            values[name] = nested[name](_join(where, name), data[name])
        else:
            values[name] = _value(_join(where, name), data[name], str(spec.type))
    return cls(**values)


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _positive(where: str, value: float | None, zero_ok: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not zero_ok)):
        raise ConfigError(f"{where}: must be {'0 or more' if zero_ok else 'more than 0'}, not {value}")


def _probability(where: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: must be between 0 and 1, not {value}")


def _camera(where: str, data) -> CameraConfig:
    camera = _section(where, data, CameraConfig, required=("name", "url"))
    check_camera(camera, where)
    return camera


def check_camera(camera: CameraConfig, where: str) -> None:
    if not NAME_PATTERN.match(camera.name):
        raise ConfigError(f"{where}.name: {camera.name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    if not camera.url.strip():
        raise ConfigError(f"{where}.url: missing")
    _positive(f"{where}.detect_every", camera.detect_every)
    _positive(f"{where}.classify_every", camera.classify_every)
    if camera.classify_every and camera.classify_every % camera.detect_every:
        raise ConfigError(f"{where}.classify_every: must be a multiple of detect_every ({camera.detect_every})")
    _probability(f"{where}.threshold", camera.threshold)
    _probability(f"{where}.min_face_score", camera.min_face_score)
    if camera.detect_size < 64:
        raise ConfigError(f"{where}.detect_size: must be at least 64, not {camera.detect_size}")
    _positive(f"{where}.open_timeout", camera.open_timeout)
    _positive(f"{where}.max_latency_ms", camera.max_latency_ms, zero_ok=True)


def camera_from_options(name: str, url: str, options: dict, where: str = "camera") -> CameraConfig:
    """A camera added at run time (MonitorControl.add_camera): checked as one in the file."""
    return _camera(where, {**(options or {}), "name": name, "url": url})


def _cameras(where: str, data) -> list[CameraConfig]:
    if not isinstance(data, list):
        raise ConfigError(f"{where}: must be a list of cameras")
    cameras = [_camera(f"{where}[{i}]", item) for i, item in enumerate(data)]
    seen = set()
    for i, camera in enumerate(cameras):
        if camera.name in seen:
            raise ConfigError(f"{where}[{i}].name: {camera.name!r} is used by another camera")
        seen.add(camera.name)
    return cameras


def _fake(where: str, data) -> FakeRule:
    rule = _section(where, data, FakeRule)
    _probability(f"{where}.on_threshold", rule.on_threshold)
    _probability(f"{where}.off_threshold", rule.off_threshold)
    if rule.on_threshold is not None and rule.off_threshold is not None and rule.off_threshold > rule.on_threshold:
        raise ConfigError(f"{where}.off_threshold: must not be above on_threshold ({rule.on_threshold})")
    _positive(f"{where}.min_seconds", rule.min_seconds, zero_ok=True)
    _positive(f"{where}.cooldown_seconds", rule.cooldown_seconds, zero_ok=True)
    return rule


def _alerts(where: str, data) -> AlertsConfig:
    alerts = _section(where, data, AlertsConfig, nested={"fake": _fake})
    _positive(f"{where}.offline_after_seconds", alerts.offline_after_seconds, zero_ok=True)
    _positive(f"{where}.pre_roll_seconds", alerts.pre_roll_seconds, zero_ok=True)
    _positive(f"{where}.post_roll_seconds", alerts.post_roll_seconds, zero_ok=True)
    return alerts


def _webhook(where: str, data) -> WebhookConfig:
    hook = _section(where, data, WebhookConfig, required=("url",))
    parts = urlsplit(hook.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url: not an http:// or https:// URL")
    _positive(f"{where}.timeout_seconds", hook.timeout_seconds)
    _positive(f"{where}.retries", hook.retries, zero_ok=True)
    _positive(f"{where}.backoff_seconds", hook.backoff_seconds)
    _positive(f"{where}.backoff_max_seconds", hook.backoff_max_seconds)
    return hook


def _webhooks(where: str, data) -> list[WebhookConfig]:
    if not isinstance(data, list):
        raise ConfigError(f"{where}: must be a list of webhooks")
    hooks = [_webhook(f"{where}[{i}]", item) for i, item in enumerate(data)]
    for i, hook in enumerate(hooks):
        hook.name = hook.name or f"webhook{i}"
    return hooks


def _mqtt(where: str, data) -> MqttConfig:
    mqtt = _section(where, data, MqttConfig, required=("url",))
    parts = urlsplit(mqtt.url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(f"{where}.url: not an mqtt:// URL")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{where}.url: bad port") from None
    if not mqtt.topic_prefix or any(c in mqtt.topic_prefix for c in "#+"):
        raise ConfigError(f"{where}.topic_prefix: must be non-empty, without # or +")
    _positive(f"{where}.timeout_seconds", mqtt.timeout_seconds)
    _positive(f"{where}.backoff_seconds", mqtt.backoff_seconds)
    return mqtt


def _sinks(where: str, data) -> SinksConfig:
    sinks = _section(where, data, SinksConfig, nested={"webhooks": _webhooks, "mqtt": _mqtt})
    names = [h.name for h in sinks.webhooks] + ([sinks.mqtt.name] if sinks.mqtt else [])
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two sinks are named alike ({', '.join(names)}); give each a name")
    return sinks


def _web(where: str, data) -> WebConfig:
    web = _section(where, data, WebConfig)
    try:
        check_web_settings(web)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _positive(f"{where}.max_upload_mb", web.max_upload_mb)
    return web


def _model(where: str, data) -> ModelConfig:
    from engines.loader import ENGINE_CHOICES

    model = _section(where, data, ModelConfig)
    if model.engine not in ENGINE_CHOICES:
        raise ConfigError(f"{where}.engine: must be one of {', '.join(ENGINE_CHOICES)}, not {model.engine!r}")
    return model


def parse_config(data, source: str = "") -> MonitorConfig:
    """A MonitorConfig from the parsed YAML document; raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("the file must be a mapping with a cameras: list")
    config = _section("", data, MonitorConfig, required=("cameras",), nested={
        "cameras": _cameras, "alerts": _alerts, "sinks": _sinks, "web": _web, "model": _model,
        "storage": lambda w, d: _section(w, d, StorageConfig),
    })
    _positive("retry_seconds", config.retry_seconds)
    _positive("retry_max_seconds", config.retry_max_seconds)
    _positive("stall_seconds", config.stall_seconds)
    _positive("publish_fps", config.publish_fps)
    config.source = source
    return config


def load_config(path: str | Path) -> MonitorConfig:
    """Read and check ``path``; ConfigError's message starts with the file name."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {at}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    try:
        config = parse_config(data, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # relative storage folders are relative to the config file, not to wherever the service starts
    if not Path(config.storage.folder).is_absolute():
        config.storage.folder = str((path.parent / config.storage.folder).resolve())
    merge_overlay(config)
    return config


# -- the web API's cameras ---------------------------------------------------------------------
#
# The config file is the operator's (often read-only: /etc, a ConfigMap, a mounted volume) and is
# never rewritten. Cameras added or removed through the web API are kept in an overlay in the
# storage folder, ``cameras.api.yaml``: ``cameras:`` (added, as in the file) and ``removed:``
# (names of the file's cameras removed). Every load applies it, so the API's changes survive a
# reload (SIGHUP) and a restart; a camera the file itself names wins over an added one of that name.


@dataclass
class CameraOverlay:
    cameras: list[CameraConfig] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def read_overlay(path: Path) -> CameraOverlay:
    """The overlay at ``path`` (empty when there is none); ConfigError naming the file and key."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CameraOverlay()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    try:
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping with cameras: and removed:")
        unknown = set(data) - {"cameras", "removed"}
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: unknown key (known: cameras, removed)")
        cameras = _cameras("cameras", data.get("cameras") or [])
        removed = data.get("removed") or []
        if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
            raise ConfigError("removed: must be a list of camera names")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return CameraOverlay(cameras, list(removed))


def write_overlay(path: Path, overlay: CameraOverlay) -> None:
    """Atomically (a reader sees the old file or the new one); mode 0600: camera URLs carry passwords.
    OSError when the folder is not writable."""
    import os

    import yaml

    document = {"cameras": [{k: v for k, v in dataclasses.asdict(c).items()
                             if v != getattr(CameraConfig(name="", url=""), k) or k in ("name", "url")}
                            for c in overlay.cameras],
                "removed": sorted(set(overlay.removed))}
    text = ("# cameras added (cameras:) and removed (removed:) through dfstream monitor's web API;\n"
            "# applied on top of the config file at every start and reload. Edit while the monitor is stopped.\n"
            + yaml.safe_dump(document, sort_keys=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def merge_overlay(config: MonitorConfig) -> None:
    """The file's cameras, less those the API removed, plus those it added (in place)."""
    overlay = read_overlay(config.storage.overlay_path)
    removed = set(overlay.removed)
    in_file = {c.name for c in config.cameras}
    config.cameras = ([c for c in config.cameras if c.name not in removed]
                      + [c for c in overlay.cameras if c.name not in in_file])
