"""ZeroMQ transport between stages.

Every stage replica *binds* one PULL socket (its inbox) and *connects* one PUSH
socket per downstream replica (its outbox).  Keeping a socket per downstream
peer, instead of one PUSH connected to all, is what makes two things exact:

- end-of-stream markers are *broadcast* to every downstream replica, so each
  one can count them;
- frames go to the next peer with room (round-robin, skipping full peers), so a
  slow replica never holds up a fast one.

High-water marks bound every hop, so a slow stage blocks the ones before it
instead of growing queues; for live sources the bounds are small because a
queued frame is latency.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from typing import Callable, Sequence

import zmq

from pipeline import codec
from pipeline.codec import Message

_URL = re.compile(r"^(ipc|tcp|inproc)://(.+)$")


class TransportError(RuntimeError):
    pass


def check_endpoint(url: str) -> str:
    """Endpoints are URLs: ipc://path, tcp://host:port or inproc://name."""
    if not _URL.match(url):
        raise TransportError(f"not a ZeroMQ endpoint URL: {url!r} (expected ipc://..., tcp://host:port or inproc://...)")
    return url


def bind_url(url: str) -> str:
    """The address to bind for an endpoint others connect to (tcp://host:port binds as given)."""
    return check_endpoint(url)


@dataclass
class EndpointAllocator:
    """Private endpoints for one run on one host.

    ipc endpoints live in a fresh 0700 directory, so no other user can connect;
    tcp endpoints bind to 127.0.0.1 only, on ports the OS picked as free.
    """

    transport: str = "ipc"
    directory: str = ""

    def __post_init__(self):
        if self.transport not in ("ipc", "tcp"):
            raise TransportError(f"unknown transport {self.transport!r} (ipc or tcp)")
        if self.transport == "ipc" and not self.directory:
            # short base path: ipc paths are limited to ~100 bytes by the OS
            self.directory = tempfile.mkdtemp(prefix="dfs-", dir="/tmp")
            os.chmod(self.directory, 0o700)

    def endpoint(self, name: str) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.directory}/{name}"
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    def cleanup(self) -> None:
        if self.transport == "ipc" and self.directory and os.path.isdir(self.directory):
            for entry in os.listdir(self.directory):
                try:
                    os.unlink(os.path.join(self.directory, entry))
                except OSError:
                    pass
            try:
                os.rmdir(self.directory)
            except OSError:
                pass


class Inbox:
    """A stage's input: one bound PULL socket (fan-in from all upstream replicas)."""

    def __init__(self, context: zmq.Context, url: str, hwm: int):
        self.url = url
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(bind_url(url))
        self.received = 0

    def poll(self, timeout_ms: int) -> bool:
        return bool(self.socket.poll(timeout_ms, zmq.POLLIN))

    def receive(self) -> Message:
        parts = self.socket.recv_multipart(copy=False)
        self.received += 1
        return codec.decode(parts)

    def close(self) -> None:
        self.socket.close()


class Outbox:
    """A stage's output: one connected PUSH socket per downstream replica."""

    def __init__(self, context: zmq.Context, urls: Sequence[str], hwm: int, linger_ms: int = 10000):
        if not urls:
            raise TransportError("an outbox needs at least one downstream endpoint")
        self.urls = [check_endpoint(u) for u in urls]
        self.sockets = []
        for url in self.urls:
            sock = context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, hwm)
            # linger: frames already handed to ZeroMQ must still reach the next
            # stage after this one exits; bounded so a dead peer cannot hang us
            sock.setsockopt(zmq.LINGER, linger_ms)
            sock.connect(url)
            self.sockets.append(sock)
        self.sent = [0] * len(self.sockets)
        self._next = 0
        self._poller = zmq.Poller()
        for sock in self.sockets:
            self._poller.register(sock, zmq.POLLOUT)

    def send(self, message: Message, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Send to the next replica with room; block (interruptibly) while all are full.
        Returns False if ``should_stop`` became true before the message could be sent."""
        parts = codec.encode(message)
        count = len(self.sockets)
        while True:
            for offset in range(count):
                index = (self._next + offset) % count
                try:
                    self.sockets[index].send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    continue
                self.sent[index] += 1
                self._next = (index + 1) % count
                return True
            if should_stop():
                return False
            self._poller.poll(100)

    def broadcast(self, message: Message, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Send to every downstream replica (end-of-stream markers)."""
        parts = codec.encode(message)
        for index, sock in enumerate(self.sockets):
            while True:
                try:
                    sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                    self.sent[index] += 1
                    break
                except zmq.Again:
                    if should_stop():
                        return False
                    sock.poll(100, zmq.POLLOUT)
        return True

    def close(self, linger_ms: int | None = None) -> None:
        for sock in self.sockets:
            if linger_ms is not None:
                sock.setsockopt(zmq.LINGER, linger_ms)
            sock.close()
