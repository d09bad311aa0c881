"""The dashboard in a real browser: headless chromium loads it from the running server, runs its
script, and we look at the DOM it ends with and at the pixels of its screenshot."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from monitor.web import HEALTH_COLOURS, WebOptions, serve
from tests.conftest import needs_shared_data
from tests.monitor_fixtures import filled_state
from tests.monitor_helpers import CHROMIUM, CHROMIUM_MISSING, WINDOW, chromium, hex_bgr, tile_looks_like_a_picture

pytestmark = [needs_shared_data, pytest.mark.skipif(CHROMIUM is None, reason=CHROMIUM_MISSING)]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """(DOM after the page's script ran, screenshot as BGR) of the dashboard of a filled state."""
    folder = tmp_path_factory.mktemp("browser")
    server = serve(filled_state(folder / "alerts"), WebOptions(port=0))
    try:
        dom = chromium(folder, "--dump-dom", server.url + "/")
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = folder / "dashboard.png"
        result = chromium(folder, f"--screenshot={shot}", server.url + "/")
        assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    finally:
        server.stop()
    return dom.stdout, cv2.imread(str(shot))


def test_the_dashboard_shows_both_cameras_and_the_latest_alert(dashboard):
    dom, _ = dashboard
    assert re.search(r'class="name">front-door<', dom) and re.search(r'class="name">lobby-cam<', dom)
    assert "track 7 held a fake verdict" in dom and 'data-alert="20260101T120000.000Z-lobby-cam-7"' in dom
    assert "hunter2" not in dom and "s3cret" not in dom
    assert "#7 fake 0.91 · 0 blinks/min" in dom and "#4 real 0.12<" in dom  # blinks shown only where eyes are read


def test_the_script_loaded_both_live_views(dashboard):
    dom, _ = dashboard
    loaded = re.findall(r'<img class="view"[^>]*data-loaded="1"', dom)
    assert len(loaded) == 2, "each camera's view should have received its picture"


def test_the_camera_tiles_show_pictures_not_blank_boxes(dashboard):
    dom, image = dashboard
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    boxes = [tuple(int(v) for v in box.split(",")) for box in re.findall(r'data-box="([\d,]+)"', dom)]
    assert len(boxes) == 2
    for x, y, w, h in boxes:
        assert w > 200 and h > 100 and y + h <= image.shape[0]
        # a frame of a real clip (a square one is letterboxed in the 16:9 tile)
        looks, why = tile_looks_like_a_picture(image, (x, y, w, h))
        assert looks, why


def test_the_health_colours_are_drawn(dashboard):
    _, image = dashboard
    pixels = image.reshape(-1, 3).astype(np.int16)
    for health in ("streaming", "offline"):
        near = np.abs(pixels - hex_bgr(HEALTH_COLOURS[health])).max(axis=1) <= 6
        assert near.sum() > 2000, f"{health} colour on {near.sum()} pixels only"  # the card's band and badge
    stalled = np.abs(pixels - hex_bgr(HEALTH_COLOURS["stalled"])).max(axis=1) <= 6
    assert stalled.sum() < 50  # no camera is stalled: its colour is not shown
