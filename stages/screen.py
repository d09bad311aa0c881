"""Screen sources: the X11 screen, a region of it, or a window found by its title.

``-s screen`` grabs the whole ``$DISPLAY``, ``-s screen:WxH+X+Y`` a region of it and
``-s window:TITLE`` the window whose title is TITLE (or, when none is called exactly
that, the largest visible one whose title contains it, ignoring case): the way to
watch the people on a video call, who arrive through the call's window.

Capture is FFmpeg's ``x11grab`` (through PyAV, already our decoder): it paces itself
at ``framerate`` (the ``--fps`` cap) and grabs through shared memory.  The window is
found, and followed, with python-xlib: a few X requests every :data:`POLL_S` tell
whether it moved, was resized, or went away -- in-process, where xdotool/xwininfo
would cost a process start per look.  A moved or resized window is grabbed again at
its new place (the grab is reopened); frames keep the size the stream was probed at
(scaled when the window's size changed), so the pipeline never sees a new size.  A
window that goes away (closed, unmapped, moved off the screen) is waited for, and
grabbing resumes when a window with that title is back; each change is one line on
stderr.

x11grab grabs the screen, not the window's own pixels: whatever covers the window is
captured too, so keep the call window uncovered (the ``--display`` overlay is placed
beside it, never over it: :func:`overlay_place`).
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import av  # before anything imports cv2: see _check_xcb_libraries

from pipeline.config import SOURCE_SCREEN, SOURCE_WINDOW, StreamInfo
from pipeline.health import Health
from pipeline.stage import StageError

POLL_S = 0.2  # how often the window's place is checked (3 small X round trips)
_REGION = re.compile(r"^(\d+)x(\d+)\+(\d+)\+(\d+)$")


@dataclass(frozen=True)
class Region:
    """A rectangle of the screen, in root-window pixels."""

    x: int
    y: int
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"

    def overlaps(self, other: "Region") -> bool:
        return (self.x < other.x + other.width and other.x < self.x + self.width
                and self.y < other.y + other.height and other.y < self.y + self.height)


@dataclass(frozen=True)
class ScreenSpec:
    """What ``-s screen[:WxH+X+Y]`` or ``-s window:TITLE`` asks for."""

    kind: str  # SOURCE_SCREEN or SOURCE_WINDOW
    region: Region | None = None  # screen: None is the whole screen
    title: str | None = None  # window


def is_screen_source(url: str) -> bool:
    return url == "screen" or url.startswith(("screen:", "window:"))


def parse_source(url: str) -> ScreenSpec:
    """The spec of a screen source; StageError names what is wrong with it."""
    if url == "screen":
        return ScreenSpec(SOURCE_SCREEN)
    if url.startswith("screen:"):
        match = _REGION.match(url[len("screen:"):])
        if match is None:
            raise StageError(f"bad screen region {url!r}: write screen:WIDTHxHEIGHT+X+Y, e.g. screen:1280x720+0+0")
        width, height, x, y = (int(v) for v in match.groups())
        if width < 16 or height < 16:
            raise StageError(f"screen region {url!r} is too small (at least 16x16 pixels)")
        return ScreenSpec(SOURCE_SCREEN, region=Region(x, y, width, height))
    if url.startswith("window:"):
        title = url[len("window:"):]
        if not title.strip():
            raise StageError("window: needs a title, e.g. -s 'window:Zoom Meeting'")
        return ScreenSpec(SOURCE_WINDOW, title=title)
    raise StageError(f"not a screen source: {url!r}")


def display_name() -> str:
    name = os.environ.get("DISPLAY")
    if not name:
        raise StageError("screen and window sources need an X display (DISPLAY is not set)")
    return name


def _even(n: int) -> int:
    """Frames travel as I420, which needs even sizes (an odd pixel at the edge is left out)."""
    return n - n % 2


class XScreen:
    """One connection to the X server: the screen's size and the windows on it."""

    def __init__(self, name: str | None = None):
        from Xlib import display as xdisplay, error as xerror

        self.name = name or display_name()
        self._errors = (xerror.XError, xerror.ConnectionClosedError)
        try:
            self.display = xdisplay.Display(self.name)
        except Exception as exc:  # python-xlib raises several kinds for "no such display"
            raise StageError(f"cannot connect to the X display {self.name} ({exc})") from None
        self.root = self.display.screen().root
        geometry = self.root.get_geometry()
        self.size = (geometry.width, geometry.height)

    def close(self) -> None:
        try:
            self.display.close()
        except Exception:
            pass  # the server may already be gone

    def clip(self, region: Region) -> Region | None:
        """``region`` cut to the screen with even sizes; None when nothing of it is on the screen."""
        x0, y0 = max(0, region.x), max(0, region.y)
        x1, y1 = min(self.size[0], region.x + region.width), min(self.size[1], region.y + region.height)
        width, height = _even(x1 - x0), _even(y1 - y0)
        if width < 16 or height < 16:
            return None
        return Region(x0, y0, width, height)

    def _title(self, window) -> str | None:
        try:
            name = window.get_full_text_property(self.display.intern_atom("_NET_WM_NAME"))
            return name or window.get_wm_name()
        except self._errors:
            return None

    def windows(self) -> list[tuple[object, str]]:
        """(window, title) of every viewable titled window, parents before children."""
        found, todo = [], [self.root]
        while todo:
            window = todo.pop()
            try:
                children = window.query_tree().children
            except self._errors:
                continue
            for child in children:
                try:
                    viewable = child.get_attributes().map_state == 2  # IsViewable
                except self._errors:
                    continue
                if not viewable:
                    continue
                title = self._title(child)
                if title:
                    found.append((child, title))
                todo.append(child)
        return found

    def find(self, title: str):
        """The window called ``title``, else the largest viewable one whose title contains it
        (case ignored); None when there is none."""
        candidates = self.windows()
        exact = [w for w, t in candidates if t == title]
        if exact:
            return exact[0]
        wanted = title.lower()
        partial = [w for w, t in candidates if wanted in t.lower()]
        if not partial:
            return None
        return max(partial, key=lambda w: self._area(w))

    def _area(self, window) -> int:
        region = self.region_of(window)
        return region.width * region.height if region else 0

    def region_of(self, window) -> Region | None:
        """Where ``window``'s inside is on the screen (unclipped); None when it is gone or unmapped."""
        try:
            if window.get_attributes().map_state != 2:
                return None
            geometry = window.get_geometry()
            origin = self.root.translate_coords(window, 0, 0)
        except self._errors:
            return None
        return Region(origin.x, origin.y, geometry.width, geometry.height)

    def titles(self) -> list[str]:
        return sorted({t for _, t in self.windows()})


def capture_region(spec: ScreenSpec, screen: XScreen) -> Region:
    """Where on the screen ``spec`` grabs now; StageError when it cannot (no such window,
    region off the screen)."""
    if spec.kind == SOURCE_SCREEN:
        if spec.region is None:
            return Region(0, 0, _even(screen.size[0]), _even(screen.size[1]))
        clipped = screen.clip(spec.region)
        if clipped is None or clipped.width != _even(spec.region.width) or clipped.height != _even(spec.region.height):
            raise StageError(f"screen region {spec.region} does not fit on the screen "
                             f"{screen.size[0]}x{screen.size[1]} of display {screen.name}")
        return clipped
    window = screen.find(spec.title)
    if window is None:
        titles = screen.titles()
        shown = ", ".join(repr(t) for t in titles[:8]) + (" ..." if len(titles) > 8 else "")
        raise StageError(f"no window titled {spec.title!r} on display {screen.name}"
                         f" (windows: {shown or 'none'})")
    region = screen.region_of(window)
    clipped = screen.clip(region) if region else None
    if clipped is None:
        raise StageError(f"window {spec.title!r} is not on the screen of display {screen.name}")
    return clipped


def _check_xcb_libraries() -> None:
    """PyAV and OpenCV each bundle a libxcb-shm (and -shape, -xfixes) under the same soname but
    built against different libxcbs; whichever is imported first provides it to both.  With
    OpenCV's, x11grab crashes the process (segfault) -- so a grabbing process must import av
    before cv2 (the sink, whose Qt window needs the opposite, is another process).  Say so
    rather than crash."""
    try:
        maps = open("/proc/self/maps", encoding="utf-8", errors="replace").read()
    except OSError:
        return
    if "opencv_python.libs/libxcb-shm" in maps and "av.libs/libxcb-shm" not in maps:
        raise StageError("cannot grab the screen in this process: OpenCV (cv2) was imported before PyAV (av), "
                         "and x11grab would crash on OpenCV's copy of libxcb-shm; import av first")


def open_grab(display: str, region: Region, fps: float):
    """The x11grab container for ``region`` at ``fps`` (its own pacing), mouse pointer left out."""
    _check_xcb_libraries()
    options = {
        "video_size": f"{region.width}x{region.height}",
        "grab_x": str(region.x),
        "grab_y": str(region.y),
        "framerate": f"{fps:g}",
        "draw_mouse": "0",
    }
    try:
        return av.open(display, format="x11grab", options=options)
    except av.error.FFmpegError as exc:
        raise StageError(f"cannot grab {region} of display {display}: {exc.strerror or exc}") from None


def _name(spec: ScreenSpec) -> str:
    if spec.kind == SOURCE_WINDOW:
        cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.title).strip("_")
        return f"window-{cleaned[:32] or 'untitled'}"
    return "screen" if spec.region is None else f"screen-{spec.region}"


def probe_screen(url: str, stream_id: int, fps: float) -> StreamInfo:
    """The stream a screen source gives: its size now (fixed for the run) and the capped rate."""
    spec = parse_source(url)
    screen = XScreen()
    try:
        region = capture_region(spec, screen)
    finally:
        screen.close()
    grab = open_grab(screen.name, region, fps)  # fails here, clearly, if x11grab cannot grab it
    try:
        time_base = grab.streams.video[0].time_base or Fraction(1, 1_000_000)
    finally:
        grab.close()
    return StreamInfo(stream_id=stream_id, url=url, kind=spec.kind, live=True, name=_name(spec),
                      width=region.width, height=region.height, fps=float(fps),
                      time_base=(time_base.numerator, time_base.denominator), frame_count=None)


def say(message: str) -> None:
    """One line for the user, on the run's stderr, as it happens (a window gone or back)."""
    print(f"dfstream: {message}", file=sys.stderr, flush=True)


class ScreenCapture:
    """Frames of a screen source at the stream's fixed size, following a window as it moves,
    and waiting for it while it is gone.  :meth:`frames` runs in the source's reader thread."""

    def __init__(self, stream: StreamInfo, stop: threading.Event, tell=say, on_health=None):
        self.stream = stream
        self.spec = parse_source(stream.url)
        self.stop = stop
        self.tell = tell
        # on_health(state, detail): a window gone or back as the stream's health (the source
        # stage's tracker, whose changes the supervisor prints and the sink writes as events);
        # without it, one line through ``tell``
        self.on_health = on_health
        self.screen = XScreen()
        self.window = None
        self.region: Region | None = None
        self.grab = None
        self.reopens = 0  # grabs reopened because the window moved or was resized
        self.outages = 0  # times the window went away
        if self.spec.kind == SOURCE_WINDOW:
            self.window = self.screen.find(self.spec.title)
        self.region = capture_region(self.spec, self.screen)

    def close(self) -> None:
        if self.grab is not None:
            self.grab.close()
            self.grab = None
        self.screen.close()

    def _where(self) -> Region | None:
        """The window's grab region now; None while it is gone (and it is looked for again)."""
        region = self.screen.region_of(self.window) if self.window is not None else None
        if region is None:
            self.window = self.screen.find(self.spec.title)
            region = self.screen.region_of(self.window) if self.window is not None else None
        return self.screen.clip(region) if region is not None else None

    def _wait_for_window(self) -> Region | None:
        """Block until the window is back (None: stopped meanwhile)."""
        self.outages += 1
        self._report(Health.RECONNECTING, f"window {self.spec.title!r} is gone; waiting for it to come back")
        gone = time.monotonic()
        while not self.stop.wait(POLL_S):
            region = self._where()
            if region is not None:
                self._report(Health.STREAMING,
                             f"window {self.spec.title!r} is back after {time.monotonic() - gone:.1f} s; watching it again")
                return region
        return None

    def _report(self, state: Health, message: str) -> None:
        if self.on_health is not None:
            self.on_health(state, message)
        else:
            self.tell(message)

    def frames(self):
        """Yield av.VideoFrames of the stream's size until stopped; StageError if grabbing fails."""
        width, height = self.stream.width, self.stream.height
        try:
            while not self.stop.is_set():
                if self.grab is None:
                    self.grab = open_grab(self.screen.name, self.region, self.stream.fps)
                next_check = time.monotonic() + POLL_S
                moved = None
                for packet in self.grab.demux(video=0):
                    for frame in packet.decode():
                        if (frame.width, frame.height) != (width, height):
                            # a resized window: the stream keeps its size (and the format x11grab gives)
                            frame = frame.reformat(width=width, height=height)
                        yield frame
                    if self.stop.is_set():
                        return
                    if self.spec.kind == SOURCE_WINDOW and time.monotonic() >= next_check:
                        next_check = time.monotonic() + POLL_S
                        where = self._where()
                        if where != self.region:
                            moved = where
                            break
                self.grab.close()
                self.grab = None
                if self.spec.kind != SOURCE_WINDOW:
                    raise StageError(f"{self.stream.url}: the grab of display {self.screen.name} ended")
                if moved is None:
                    moved = self._wait_for_window()
                    if moved is None:
                        return
                else:
                    self.reopens += 1
                self.region = moved
        except av.error.FFmpegError as exc:
            raise StageError(f"{self.stream.url}: grabbing display {self.screen.name} failed "
                             f"({exc.strerror or exc})") from None
        finally:
            if self.grab is not None:
                self.grab.close()
                self.grab = None


def overlay_place(captured: Region, screen_size: tuple[int, int], frame_size: tuple[int, int],
                  min_width: int = 240) -> Region | None:
    """Where the ``--display`` overlay window can go without covering the captured region:
    the largest of right of it, left, below, above (the frame's aspect kept, never larger than
    the frame); None when no side has room for one at least ``min_width`` wide."""
    screen_w, screen_h = screen_size
    frame_w, frame_h = frame_size
    sides = [
        (captured.x + captured.width, 0, screen_w - captured.x - captured.width, screen_h),  # right
        (0, 0, captured.x, screen_h),  # left
        (0, captured.y + captured.height, screen_w, screen_h - captured.y - captured.height),  # below
        (0, 0, screen_w, captured.y),  # above
    ]
    best = None
    for x, y, width, height in sides:
        if width <= 0 or height <= 0:
            continue
        scale = min(1.0, width / frame_w, height / frame_h)
        w, h = int(frame_w * scale), int(frame_h * scale)
        if w < min_width:
            continue
        if best is None or w * h > best.width * best.height:
            best = Region(x, y, w, h)
    return best


def overlay_place_for(stream: StreamInfo) -> Region:
    """Where the ``--display`` window of a screen stream goes now (beside what it grabs);
    StageError, in one line, when there is no room for it on the screen."""
    spec = parse_source(stream.url)
    screen = XScreen()
    try:
        captured, size = capture_region(spec, screen), screen.size
    finally:
        screen.close()
    place = overlay_place(captured, size, (stream.width, stream.height))
    if place is None:
        raise StageError(f"--display: no room on the {size[0]}x{size[1]} screen beside the grabbed region "
                         f"{captured} of {stream.url!r} for the overlay window (it must not cover what is "
                         f"watched); grab a smaller region, or use --output/--report instead of --display")
    return place
