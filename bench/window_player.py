"""A video call stand-in for the screen-source tests and bench: plays a clip, looped at its frame
rate, in an X window with a title, drawn with python-xlib (no Qt: under an X server with
no window manager, Qt windows now and then never get their MapNotify and stay black).

    python -m bench.window_player CLIP TITLE X Y

Commands, one per line on stdin: ``move X Y``, ``resize W H`` (the picture is scaled to
the window), ``close`` (the window is destroyed), ``open`` (a new one, same title, same
place), ``quit``.  It answers each with ``ok <command>`` on stdout once the X server has
done it, and says ``shown`` once the first frame is drawn.
"""
from __future__ import annotations

import select
import sys
import time

import av
import cv2
import numpy as np
from Xlib import X, display as xdisplay

MAX_REQUEST_BYTES = 200_000  # each PutImage under the core protocol's 256 KiB request limit


def clip_rate(path: str) -> tuple[float, int, int]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        return float(stream.average_rate or 30), stream.codec_context.width, stream.codec_context.height


def looped(path: str):
    """The clip's frames as BGRX, decoded as they are shown, over and over."""
    while True:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="bgra")


class Player:
    def __init__(self, clip: str, title: str, x: int, y: int):
        self.fps, self.width, self.height = clip_rate(clip)
        self.frames = looped(clip)
        self.title = title
        self.x, self.y = x, y
        self.display = xdisplay.Display()
        self.screen = self.display.screen()
        self.window = None
        self.gc = None

    def open(self) -> None:
        root = self.screen.root
        self.window = root.create_window(self.x, self.y, self.width, self.height, 0, self.screen.root_depth,
                                         X.InputOutput, X.CopyFromParent, background_pixel=self.screen.black_pixel)
        self.window.set_wm_name(self.title)
        self.window.change_property(self.display.intern_atom("_NET_WM_NAME"), self.display.intern_atom("UTF8_STRING"),
                                    8, self.title.encode())
        self.gc = self.window.create_gc()
        self.window.map()
        self.display.sync()

    def close(self) -> None:
        if self.window is not None:
            self.window.destroy()
            self.window = None
            self.display.sync()

    def show(self, image: np.ndarray) -> None:
        if self.window is None:
            return
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        rows = max(1, MAX_REQUEST_BYTES // (self.width * 4))
        for top in range(0, self.height, rows):
            band = np.ascontiguousarray(image[top:top + rows])
            self.window.put_image(self.gc, 0, top, self.width, band.shape[0], X.ZPixmap, self.screen.root_depth, 0,
                                  band.tobytes())
        self.display.sync()

    def command(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        if words[0] == "move":
            self.x, self.y = int(words[1]), int(words[2])
            if self.window is not None:
                self.window.configure(x=self.x, y=self.y)
        elif words[0] == "resize":
            self.width, self.height = int(words[1]), int(words[2])
            if self.window is not None:
                self.window.configure(width=self.width, height=self.height)
        elif words[0] == "close":
            self.close()
        elif words[0] == "open":
            self.open()
        elif words[0] == "quit":
            return False
        self.display.sync()
        print(f"ok {line.strip()}", flush=True)
        return True

    def run(self) -> None:
        self.open()
        started, shown = time.monotonic(), False
        index = 0
        while True:
            self.show(next(self.frames))
            if not shown:
                print("shown", flush=True)
                shown = True
            index += 1
            delay = started + index / self.fps - time.monotonic()
            ready, _, _ = select.select([sys.stdin], [], [], max(0.0, delay))
            if ready:
                line = sys.stdin.readline()
                if not line or not self.command(line):
                    break


def main() -> None:
    clip, title, x, y = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    Player(clip, title, x, y).run()


if __name__ == "__main__":
    main()
