"""Typed configuration for a run and for each stage.

The CLI builds a :class:`RunConfig`; the launcher turns it into one stage config
per process.  Everything here is a plain dataclass so it can be sent to a spawned
process and written to ``--metrics-json`` as it was used.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

SOURCE_FILE = "file"
SOURCE_RTSP = "rtsp"
SOURCE_HTTP = "http"
SOURCE_WEBCAM = "webcam"
SOURCE_SCREEN = "screen"  # the X11 screen or a region of it (stages/screen.py)
SOURCE_WINDOW = "window"  # a window found by its title, followed as it moves
SCREEN_KINDS = (SOURCE_SCREEN, SOURCE_WINDOW)
LIVE_KINDS = (SOURCE_RTSP, SOURCE_HTTP, SOURCE_WEBCAM, *SCREEN_KINDS)
# Screen sources are grabbed at most this often (--fps): a call's video rarely runs faster,
# and the CPU is shared with the call itself.
SCREEN_FPS = 15.0
# A run's default detection schedule (RunConfig): faces found, and cut for the model, on every 3rd
# frame. Offline measures of what a run sees along a track (blinks) read at the same cadence.
DETECT_EVERY = 3
CLASSIFY_EVERY = 3


@dataclass
class StreamInfo:
    """What the launcher learned about one source by probing it before the run."""

    stream_id: int
    url: str
    kind: str  # file, rtsp, http, webcam, screen, window
    live: bool  # drop-oldest, never build latency
    name: str  # used for {stream} in output patterns
    width: int
    height: int
    fps: float
    time_base: tuple[int, int]
    frame_count: int | None  # None for live sources and files that do not say
    has_audio: bool = False
    paced: bool = False  # a file read at its own frame rate (--live), as a camera would deliver it
    # Quarter turns (counter-clockwise) that stand each frame upright: phones store portrait
    # video sideways with a display matrix that says so. width and height are those upright.
    quarter_turns: int = 0


@dataclass
class ReconnectConfig:
    """How a live source (RTSP, HTTP, webcam) rides out an outage: after a lost connection, a
    read error, an end of stream or a stall it opens the camera again, waiting between tries
    (exponential backoff with jitter, so many cameras behind one dead switch do not all knock
    at once). The first open, in the launcher's probe and in the source stage, is not retried:
    a camera that is down at the start fails fast with one line."""

    enabled: bool = True  # False (--no-reconnect): a live stream ends when its camera does
    stall_timeout_s: float = 5.0  # connected but no frame for this long: stalled, reconnect
    initial_s: float = 0.5  # wait before the first try
    max_s: float = 30.0  # the wait doubles per failed try up to this
    attempts: int = 0  # failed tries in a row before the stream goes offline (0: never give up)
    jitter: float = 0.5  # each wait is drawn from [(1 - jitter) * w, w]
    # frames arrive but the pipeline has refused them (live admission) for this long: blocked
    blocked_after_s: float = 2.0


@dataclass
class SourceConfig:
    stream: StreamInfo
    open_timeout_s: float = 10.0  # network sources that do not answer in time fail clearly
    read_timeout_s: float = 10.0  # --no-reconnect: a live read that waits this long fails the stream
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    decode_threads: int = 0  # 0: let FFmpeg choose
    # The face detector looks at every detect_every-th frame and crops are cut on every
    # classify_every-th (a multiple); in a run, the others go from the source straight to
    # annotate, their faces tracked.
    detect_every: int = 1
    classify_every: int = 1
    # Live streams: when the frame due for detection finds every detect replica busy, it goes
    # round the detector too and the next frame is due instead. The detector then runs as
    # often as it can keep up (at most every detect_every-th frame) and the stream drops no
    # frames for it. Off for swapping, which must see every face on every frame: it waits.
    detect_when_free: bool = False
    # False (no video output): only the frames the face detector looks at carry pixels; the
    # others skip the colour conversion and cross the processes as a few hundred bytes.
    all_pixels: bool = True


@dataclass
class DetectConfig:
    face_detector: str = "auto"  # yunet, scrfd, haar, auto (yunet if installed, else haar), or a path
    face_detector_path: str | None = None  # resolved by engines.registry.resolve_face_detector
    detect_max_side: int = 640  # frames are downscaled to this before face detection
    min_face_score: float = 0.8  # YuNet scores clear faces above 0.9; lower lets in corners and textures
    # ONNX Runtime threads per detect replica (0: one per usable core). The detector shares
    # the cores with decoding, encoding and the model: one thread costs least CPU per frame
    # (11 ms for 640x360 on our 2-core VM, 15 ms with two), and replicas add parallelism.
    threads: int = 1
    min_face_size: int = 24  # pixels, in the full frame; smaller faces are ignored
    max_faces: int = 8
    crop_size: tuple[int, int] = (224, 224)  # from the model's metadata
    crop_margin: float = 1.0  # from the model's metadata
    keep_image: bool = True  # False: drop the picture once crops are cut (no video output)
    # send the picture of a frame with crops straight to annotate, its crops through batch and
    # infer (FrameMessage.part); set by the graph for detection runs with video output
    split_frames: bool = False


@dataclass
class BatchConfig:
    max_batch: int = 16  # faces
    timeout_ms: float = 33.0  # send a partial batch this long after its first face arrived
    # Live runs: send as soon as every live stream has a frame in the batch. The source hands
    # detect one frame per stream at a time, so waiting longer only adds latency.
    live_streams: int = 0


@dataclass
class InferConfig:
    model_path: str = ""
    mode: str = "detect"  # detect or swap
    engine: str = "auto"  # auto, tensorrt, onnxruntime, torch
    # ONNX Runtime intra-op threads; None: the cores this process may use for a run of one live
    # stream, 1 otherwise (see runtime.graph.infer_threads)
    threads: int | None = None
    detector_path: str | None = None  # with mode=swap: also score the swapped faces
    swap_source: tuple[str, ...] = ()  # one-shot (inswapper-style) swappers: photos of the new face
    embedder_path: str | None = None  # and the identity embedding model for those photos
    # 68-point landmark model (registry name) run on each face crop beside the detector for the eye
    # opening, whose closings along a track are its blinks (engines.blinks); None: off
    eye_landmarks: str | None = None


@dataclass(frozen=True)
class VerdictRule:
    """How a track's P(fake) reads as a verdict (``stages.tracking.verdict_of``): the one rule the overlay,
    the events, the run's summary, the call report and the monitor's fake alerts draw from.  Its numbers are
    the model's (its metadata, set on validation by ``dfstream calibrate``) unless a run sets the threshold."""
    threshold: float = 0.5  # P(fake) at which a face is called fake
    # how far a real face's smoothed P(fake) strays on its own: this close to a line, a face is "uncertain"
    # (the model's own; this default for a model without one)
    uncertain_band: float = 0.1
    # the model's line for "real": a video score at or under which few of the known fakes lie; None: the threshold
    real_below: float | None = None
    min_scores: int = 2  # scores a track needs before it gets a verdict other than "uncertain"

    @property
    def fake_from(self) -> float:
        """The lowest P(fake) drawn fake."""
        return min(1.0, self.threshold + self.uncertain_band)

    @property
    def real_up_to(self) -> float:
        """The highest P(fake) drawn real (never above the threshold)."""
        line = self.threshold if self.real_below is None else min(self.real_below, self.threshold)
        return max(0.0, line - self.uncertain_band)

    def for_means(self) -> "VerdictRule":
        """The rule for a mean over a whole file or track (``predict``, a run's summary, the call report): the
        lines as they were set, on such means; no band, which allows for a moving average's wander, and a mean of
        one score is judged as ``predict`` judges a photo."""
        return replace(self, uncertain_band=0.0, min_scores=1)


@dataclass
class AnnotateConfig:
    verdict: VerdictRule = field(default_factory=VerdictRule)
    ema_alpha: float = 0.3  # weight of the newest score in each track's moving average
    iou_match: float = 0.3  # boxes overlapping at least this much continue a track
    track_max_missed: int = 2  # detections a track may miss before it is dropped
    reorder_window: int = 256  # frames held per stream while waiting for a late one
    gap_timeout_s: float = 2.0  # live streams: give up on a missing frame after this long
    draw: bool = True
    # engines.blinks.BlinkEvidence's fields, from the model's metadata (when eyes are read): a track's
    # score is raised to its blinks' where those are more surprising for a real person. Empty: off
    blink_evidence: dict = field(default_factory=dict)
    hud: bool = True
    mode: str = "detect"  # detect or swap (swap: paste swapped crops back into the frame)
    swap_faces: str = "all"  # all, largest, or a track id: which swapped faces are pasted back
    # for paste-back: how detect cut the crops (the graph copies DetectConfig's)
    crop_size: tuple[int, int] = (224, 224)
    crop_margin: float = 1.0
    streams: list[StreamInfo] = field(default_factory=list)


@dataclass
class SinkConfig:
    output_pattern: str | None = None  # e.g. out/{stream}.mp4
    display: bool = False
    events_path: str | None = None
    codec: str = "libx264"
    preset: str = "superfast"  # x264: twice veryfast's speed for ~35% more bytes; encoding is the costliest stage
    crf: int = 23
    # x264 tune for live streams: zerolatency drops B-frames and frame threads, so each frame
    # leaves the encoder at once (no frames held back) and costs ~17% less CPU for ~15% more bytes
    live_tune: str | None = "zerolatency"
    # Live streams: x264 ultrafast, ~35% less encode CPU than superfast for ~45% more bytes
    # (720p on our 2-core VM: 11 vs 18 ms a frame). A live run must keep up with its camera,
    # and the CPU it saves shortens every stage's wait (dfstream bench: p99 80 vs 98 ms).
    live_preset: str = "ultrafast"
    encode_threads: int = 0  # x264 threads per file encoder (0: FFmpeg chooses)
    # Live streams: one. zerolatency encodes each frame in slices across threads that must meet
    # for every frame; a live run's cores are already busy with its other stages and streams,
    # and one thread spends ~6 % less CPU per frame (720p ultrafast: 4.9 vs 5.1 ms; the sink of
    # four live streams 0.60 vs 0.66 cores) for ~0.7 ms more per frame on an idle machine.
    live_encode_threads: int = 1
    # A ZeroMQ endpoint (ipc://..., tcp://...) the sink connects a PUB socket to: each analysed
    # frame's faces as JSON and the annotated frame as JPEG, at most publish_fps per stream
    # (dfstream monitor subscribes: its live view, alert rules and evidence clips)
    publish_url: str | None = None
    publish_fps: float = 5.0
    # The call report (--report DIR): per participant verdict, P(fake) over time, snapshots;
    # rewritten every report_every_s while the run goes on (0: only when it stops).
    report_path: str | None = None
    report_every_s: float = 0.0
    # the verdict rule the report judges each participant by (the graph copies AnnotateConfig's)
    verdict: VerdictRule = field(default_factory=VerdictRule)
    streams: list[StreamInfo] = field(default_factory=list)

    def with_preset(self, preset: str | None) -> "SinkConfig":
        """One x264 preset for files and live streams alike (``--preset``); None keeps both defaults."""
        return replace(self, preset=preset, live_preset=preset) if preset else self


@dataclass
class RunConfig:
    streams: list[StreamInfo]
    detect: DetectConfig = field(default_factory=DetectConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    # The detection schedule, which each source follows (the graph copies it into every
    # SourceConfig); the detect stage does what each frame asks.
    detect_every: int = DETECT_EVERY  # run the face detector on every k-th frame, track in between
    classify_every: int = CLASSIFY_EVERY  # cut crops for the model on every m-th frame (a multiple of k)
    detect_replicas: int = 1
    infer_replicas: int = 1
    queue_size: int = 8  # ZeroMQ high-water mark (messages) per hop for file sources
    live_queue_size: int = 1  # per hop when any source is live: queues are latency
    # Live sources send a new frame only while the pipeline can finish it within this long of
    # its capture (0: no limit); see pipeline.transport.FinishedInbox. A second bounds the
    # multi-second lag of an encoder slower than the camera, and still lets a busy run of
    # several cameras (p99 0.2-1 s in dfstream bench's scaling) keep every frame.
    live_latency_budget_ms: float = 1000.0
    # With video to encode, every stage but the sink runs at this niceness (0: all equal).
    # The encoder sets the pace (dfstream bench: sink busy 96 %, no other stage above 45 %)
    # and its threads lose throughput whenever another stage holds a core they could use;
    # the other stages have slack and queues, so letting them yield costs them nothing.
    # Interleaved runs on our 2-core VM: 93.5 fps at 10, 84.4 at 0 (3 each).
    upstream_niceness: int = 10
    # Annotate runs in the sink's process (runtime.runner.StageSpec.then): the annotated picture
    # reaches the encoder in memory, one 720p ZeroMQ hop a frame fewer, and one process fewer
    # polling. Interleaved A/B on our 2-core VM (BENCHMARKS.md): four live 720p30 streams with
    # video dropped 0.07 % against 1.38 % (6 pairs); 1.7-2 ms less CPU a frame. False gives
    # each its own process.
    annotate_in_sink: bool = True
    metrics_interval_s: float = 5.0  # live runs print metrics this often
    metrics_json: str | None = None
    progress: bool = True
    transport: str = "ipc"  # ipc or tcp (127.0.0.1)
    open_timeout_s: float = 10.0  # --open-timeout: network sources and webcams, in the probe and in the source stage
    max_restarts: int = 3  # per stage, live runs only
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)  # live sources, copied into each SourceConfig

    @property
    def pixels_after_detect(self) -> bool:
        """Whether any stage after detect needs the frames' pixels."""
        return bool(self.sink.output_pattern or self.sink.display or self.sink.publish_url or self.sink.report_path
                    or self.infer.mode == "swap")

    @property
    def live(self) -> bool:
        return any(s.live for s in self.streams)


# The stages of a run, in the order a frame passes them, and the config class of each.
STAGE_CONFIGS = {
    "source": SourceConfig,
    "detect": DetectConfig,
    "batch": BatchConfig,
    "infer": InferConfig,
    "annotate": AnnotateConfig,
    "sink": SinkConfig,
}
STAGE_NAMES = tuple(STAGE_CONFIGS)
