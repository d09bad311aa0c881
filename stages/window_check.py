"""Does the ``--display`` window show what the sink draws into it?

On an X server with no window manager, OpenCV's Qt window now and then never receives its
MapNotify, so Qt never paints it: the window stays black, or keeps whatever was on the screen
where it was first mapped (8 of 129 windows on this project's test machines).  Nothing in
OpenCV's API tells.  :class:`PaintWatch` asks the X server instead: a moment after a window's
first frame it reads the window's pixels and compares them with the frames just drawn; a
window that shows none of them is opened again (at most :data:`MAX_REOPENS` times).

It looks only while a window is new, so a window the user later covers with another is never
mistaken for a broken one; where the window cannot be read (no X11, a window manager that
keeps it elsewhere) it stops looking and assumes the best; a window that is there but not mapped
(no viewable window with its title) shows nothing.
"""
from __future__ import annotations

import collections

import cv2
import numpy as np

LOOKS_AFTER_S = (1.5, 4.0)  # after a window's first frame: Qt may only be slow, so a second look before giving up on it
MAX_REOPENS = 2
THUMB = 64  # side of the grey thumbnails compared
SHOWS_FRAME_MAD = 14.0  # mean absolute difference (of 255) under which a thumbnail of the window shows a frame
RECENT_FRAMES = 8  # frames drawn lately: the window may lag the sink by a few
NOTHING_SHOWN = np.zeros((0, 0, 3), np.uint8)  # what a window that is not on the screen shows


def thumbnail(bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def picture_areas(window_size: tuple[int, int], frame_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) where a frame may lie in the window: all of it (stretched), or the
    frame's aspect fitted in it (kept ratio), centred or at the top left."""
    (ww, wh), (fw, fh) = window_size, frame_size
    scale = min(ww / fw, wh / fh)
    w, h = max(1, round(fw * scale)), max(1, round(fh * scale))
    return list(dict.fromkeys([(0, 0, ww, wh), ((ww - w) // 2, (wh - h) // 2, w, h), (0, 0, w, h)]))


def shows_any(window_bgr: np.ndarray, recent: list[np.ndarray], frame_size: tuple[int, int]) -> bool:
    """Whether the window's pixels show one of the ``recent`` frames (their thumbnails), wherever
    in the window the frame was fitted."""
    if window_bgr.size == 0:
        return False
    for x, y, w, h in picture_areas((window_bgr.shape[1], window_bgr.shape[0]), frame_size):
        shown = thumbnail(window_bgr[y:y + h, x:x + w])
        if any(float(np.abs(shown - frame).mean()) < SHOWS_FRAME_MAD for frame in recent):
            return True
    return False


class XWindowReader:
    """Reads a top-level window's pixels by its exact title through python-xlib (the sink's own
    X connection, separate from Qt's)."""

    def __init__(self):
        from stages.screen import XScreen

        self.screen = XScreen()

    def pixels(self, title: str) -> np.ndarray | None:
        """The window's inside as BGR; an empty picture when no viewable window has that title (one that
        Qt never mapped shows nothing); None when it cannot be read."""
        from Xlib import X

        for window, name in self.screen.windows():
            if name != title:
                continue
            try:
                geometry = window.get_geometry()
                reply = window.get_image(0, 0, geometry.width, geometry.height, X.ZPixmap, 0xFFFFFFFF)
            except self.screen._errors:
                return None
            data = np.frombuffer(reply.data, np.uint8)
            if data.size != geometry.width * geometry.height * 4:  # not a 24/32-bit visual: not worth guessing
                return None
            return data.reshape(geometry.height, geometry.width, 4)[..., :3]
        return NOTHING_SHOWN

    def close(self) -> None:
        self.screen.close()


class PaintWatch:
    """Watches one ``--display`` window while it is new (see the module docstring).

    :meth:`drawn` is called with each frame shown and the time; it answers ``True`` when the
    window has shown none of the recent frames at both looks and should be opened again."""

    def __init__(self, title: str, reader_factory=XWindowReader):
        self.title = title
        self.reader_factory = reader_factory
        self.reader = None
        self.reopens = 0
        self.done = False
        self.gave_up = False  # opened MAX_REOPENS times more and it still showed nothing drawn
        self.recent: collections.deque = collections.deque(maxlen=RECENT_FRAMES)
        self.frame_size = (0, 0)  # of the frames drawn: where a frame with its ratio kept would lie in the window
        self._restart()

    def _restart(self) -> None:
        self.first_frame_at: float | None = None
        self.looks = 0
        self.recent.clear()

    def drawn(self, bgr: np.ndarray, now: float) -> bool:
        if self.done:
            return False
        self.recent.append(thumbnail(bgr))
        self.frame_size = (bgr.shape[1], bgr.shape[0])
        if self.first_frame_at is None:
            self.first_frame_at = now
        if now - self.first_frame_at < LOOKS_AFTER_S[self.looks]:
            return False
        self.looks += 1
        shown = self._read()
        if shown is None or shows_any(shown, list(self.recent), self.frame_size):
            self._stop()  # painted (or unreadable: nothing more to learn)
            return False
        if self.looks < len(LOOKS_AFTER_S):
            return False
        if self.reopens >= MAX_REOPENS:
            self.gave_up = True
            self._stop()
            return False
        self.reopens += 1
        self._restart()
        return True

    def _read(self) -> np.ndarray | None:
        try:
            if self.reader is None:
                self.reader = self.reader_factory()
            return self.reader.pixels(self.title)
        except Exception:  # no X server to ask (Wayland, a closed display): assume it paints
            return None

    def _stop(self) -> None:
        self.done = True
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def close(self) -> None:
        self._stop()
