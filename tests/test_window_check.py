"""The --display window's paint check: it reads a real X window's pixels, tells a window that shows
the frames drawn from one that shows something else, and asks for a window to be opened again only
while it is new."""
import os

import numpy as np
import pytest

from stages.window_check import (LOOKS_AFTER_S, MAX_REOPENS, PaintWatch, XWindowReader, picture_areas, shows_any,
                                 thumbnail)
from tests.live_helpers import xvfb


def frame(seed: int, size=(240, 320)) -> np.ndarray:
    """A picture with structure (smooth blobs), different for each seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def display():
    with xvfb("800x600x24") as name:
        yield name


def test_reader_gets_a_windows_pixels_by_title_and_tells_its_frame_from_another(display, monkeypatch):
    from Xlib import X, display as xdisplay

    monkeypatch.setenv("DISPLAY", display)
    picture = frame(1)
    connection = xdisplay.Display(display)
    screen = connection.screen()
    window = screen.root.create_window(30, 40, 320, 240, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
                                       background_pixel=screen.black_pixel)
    window.set_wm_name("dfstream - paint check")
    gc = window.create_gc()
    window.map()
    connection.sync()
    bgrx = np.dstack([picture, np.zeros(picture.shape[:2], np.uint8)])
    for top in range(0, 240, 120):  # bands under the core protocol's request size limit
        band = np.ascontiguousarray(bgrx[top:top + 120])
        window.put_image(gc, 0, top, 320, 120, X.ZPixmap, screen.root_depth, 0, band.tobytes())
    connection.sync()
    reader = XWindowReader()
    try:
        pixels = reader.pixels("dfstream - paint check")
        assert pixels is not None and pixels.shape == (240, 320, 3)
        assert np.abs(pixels.astype(int) - picture).max() <= 1
        assert shows_any(pixels, [thumbnail(picture)], (320, 240))
        assert not shows_any(pixels, [thumbnail(frame(2)), thumbnail(np.zeros_like(picture))], (320, 240))
        assert reader.pixels("no such window").size == 0  # not on the screen: shows nothing
        window.unmap()
        connection.sync()
        assert reader.pixels("dfstream - paint check").size == 0  # mapped never or no more: shows nothing
    finally:
        reader.close()
        connection.close()


def test_a_frame_fitted_into_the_window_with_its_ratio_kept_is_found_there():
    assert picture_areas((640, 480), (320, 240)) == [(0, 0, 640, 480)]
    assert picture_areas((640, 480), (1280, 720)) == [(0, 0, 640, 480), (0, 60, 640, 360), (0, 0, 640, 360)]
    narrow = frame(4, (240, 160))
    window = np.zeros((240, 320, 3), np.uint8)
    window[:, 80:240] = narrow  # centred, black bars left and right
    assert shows_any(window, [thumbnail(narrow)], (160, 240))
    assert not shows_any(window, [thumbnail(narrow)], (320, 240))  # looked for as if it filled the window


class Screen:
    """What the X server would show in the window: a stand-in for the reader inside this unit test of
    PaintWatch's timing and decisions (the reader itself is tested above on a real X server)."""

    def __init__(self, shows):
        self.shows, self.reads, self.closed = shows, 0, 0

    def pixels(self, title):
        self.reads += 1
        return self.shows()

    def close(self):
        self.closed += 1


def feed(watch: PaintWatch, pictures, start: float, seconds: float, step: float = 0.1) -> list[bool]:
    answers, t = [], start
    while t < start + seconds:
        answers.append(watch.drawn(pictures(t), t))
        t += step
    return answers


def test_a_window_showing_its_frames_is_looked_at_once_and_then_left_alone():
    screen = Screen(lambda: frame(7))
    watch = PaintWatch("w", reader_factory=lambda: screen)
    assert not any(feed(watch, lambda t: frame(7), 0.0, 10.0))
    assert screen.reads == 1 and watch.done and not watch.gave_up and screen.closed == 1


def test_a_window_showing_something_else_is_reopened_after_two_looks_and_given_up_on_after_the_last_try():
    screen = Screen(lambda: np.zeros((240, 320, 3), np.uint8))  # never painted: black
    watch = PaintWatch("w", reader_factory=lambda: screen)
    answers = feed(watch, lambda t: frame(3), 0.0, 3 * (LOOKS_AFTER_S[-1] + 1))
    assert sum(answers) == MAX_REOPENS  # opened again twice, then no more
    first = answers.index(True) * 0.1
    assert LOOKS_AFTER_S[-1] - 0.05 <= first <= LOOKS_AFTER_S[-1] + 0.15  # not before the second look
    assert watch.gave_up and screen.reads == 2 * (MAX_REOPENS + 1)


def test_an_unreadable_window_is_assumed_painted():
    def no_x():
        raise RuntimeError("cannot connect to the X display")

    watch = PaintWatch("w", reader_factory=no_x)
    assert not any(feed(watch, lambda t: frame(3), 0.0, 6.0))
    assert watch.done and not watch.gave_up


def test_a_window_that_is_not_on_the_screen_is_reopened():
    screen = Screen(lambda: np.zeros((0, 0, 3), np.uint8))  # what the reader gives for an unmapped window
    watch = PaintWatch("w", reader_factory=lambda: screen)
    assert sum(feed(watch, lambda t: frame(3), 0.0, LOOKS_AFTER_S[-1] + 1)) == 1
