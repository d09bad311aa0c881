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

Hops to other hosts (a tcp:// endpoint whose address is not loopback, as a run
plan may place them) are encrypted and authenticated with CurveZMQ: the binding
side is the CURVE server, the connecting side a client, with the keys of
``dfstream keys DIR`` (:class:`CurveKeys`); each context that binds such a socket
runs a ZAP handler that lets in the run's client key only. Such an endpoint
without keys is refused. ipc://, inproc:// and loopback tcp are unchanged.
"""
from __future__ import annotations

import collections
import ipaddress
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import zmq

from pipeline import codec
from pipeline.codec import Message

SMALL_SOCKET_BUFFER = 64 * 1024  # bytes; live runs: less than one frame waits in the kernel

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


def crosses_hosts(url: str) -> bool:
    """Whether ``url`` is a tcp endpoint whose address is not loopback (binding ``*`` or
    0.0.0.0 counts: other hosts can reach it). A host name other than localhost counts too:
    what it resolves to is not known here."""
    match = _URL.match(url)
    if not match or match.group(1) != "tcp":
        return False
    host = match.group(2).rsplit(":", 1)[0].strip("[]")
    if host.lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


KEY_FILES = ("server.key", "server.key_secret", "client.key", "client.key_secret")


@dataclass(frozen=True)
class CurveKeys:
    """The CurveZMQ keys of one run across hosts (Z85 text, as ``zmq.curve_keypair`` makes them):
    the server pair every binding socket uses, the client pair every connecting socket uses.
    Every host of the run holds the same folder (written by :func:`write_keys`)."""

    directory: str
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def load(cls, directory: str | Path) -> "CurveKeys":
        import zmq.auth

        folder = Path(directory)
        missing = [name for name in KEY_FILES if not (folder / name).is_file()]
        if missing:
            raise TransportError(f"curve keys {folder}: {', '.join(missing)} missing (make them with "
                                 f"`dfstream keys {folder}`)")
        try:
            server_public, server_secret = zmq.auth.load_certificate(folder / "server.key_secret")
            client_public, client_secret = zmq.auth.load_certificate(folder / "client.key_secret")
        except (OSError, ValueError) as exc:
            raise TransportError(f"curve keys {folder}: cannot read them ({exc})") from None
        if not server_secret or not client_secret:
            raise TransportError(f"curve keys {folder}: a .key_secret file holds no secret key")
        return cls(str(folder), server_public, server_secret, client_public, client_secret)


def write_keys(directory: str | Path) -> list[Path]:
    """New server and client key pairs in ``directory`` (made 0700 if new), each file 0600.
    Keys already there are not overwritten (FileExistsError): a run's hosts must keep the same."""
    import zmq.auth

    folder = Path(directory)
    present = [name for name in KEY_FILES if (folder / name).exists()]
    if present:
        raise FileExistsError(f"{folder} already holds keys ({', '.join(present)}): remove them or choose another folder")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for name in ("server", "client"):
        for path in zmq.auth.create_certificates(folder, name):
            os.chmod(path, 0o600)  # the secret file most of all; the public one is nobody else's business either
            written.append(Path(path))
    return written


class _OnlyTheRunsClient:
    """ZAP's answer for CURVE: only the run's client public key is let in."""

    def __init__(self, client_public: bytes):
        self.allowed = client_public  # Z85, as ZAP hands keys to the callback

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.allowed


_authenticators: dict[int, object] = {}  # id(context) -> its ThreadAuthenticator
_authenticators_lock = threading.Lock()


def _authenticate(context: zmq.Context, keys: CurveKeys) -> None:
    """Start, once per context, the ZAP handler that vets CURVE clients."""
    from zmq.auth.thread import ThreadAuthenticator

    with _authenticators_lock:
        if id(context) in _authenticators:
            return
        authenticator = ThreadAuthenticator(context)
        authenticator.start()
        authenticator.configure_curve_callback(domain="*", credentials_provider=_OnlyTheRunsClient(keys.client_public))
        _authenticators[id(context)] = authenticator


def release_context(context: zmq.Context) -> None:
    """Stop the context's ZAP handler, if it has one (before ``context.term()``, which waits for it)."""
    with _authenticators_lock:
        authenticator = _authenticators.pop(id(context), None)
    if authenticator is not None:
        authenticator.stop()


def _refuse_plain(url: str) -> TransportError:
    return TransportError(f"{url} reaches other hosts: it needs CurveZMQ keys (make them with `dfstream keys DIR` "
                          "and name the folder as curve_keys in the plan)")


def bind_socket(sock: zmq.Socket, url: str, keys: CurveKeys | None = None) -> None:
    """Bind ``sock`` to ``url``, as a CURVE server when the endpoint reaches other hosts."""
    if crosses_hosts(url):
        if keys is None:
            raise _refuse_plain(url)
        _authenticate(sock.context, keys)
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public
        sock.curve_server = True
    sock.bind(bind_url(url))


def connect_socket(sock: zmq.Socket, url: str, keys: CurveKeys | None = None) -> None:
    """Connect ``sock`` to ``url``, as a CURVE client when the endpoint reaches other hosts."""
    check_endpoint(url)
    if crosses_hosts(url):
        if keys is None:
            raise _refuse_plain(url)
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.client_public
        sock.curve_secretkey = keys.client_secret
    sock.connect(url)


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

    def __init__(self, context: zmq.Context, url: str, hwm: int, small_buffers: bool = False,
                 keys: CurveKeys | None = None):
        self.url = url
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.RCVHWM, hwm)
        if small_buffers:
            # the kernel's socket buffer is a queue ZeroMQ's HWM does not count
            self.socket.setsockopt(zmq.RCVBUF, SMALL_SOCKET_BUFFER)
        self.socket.setsockopt(zmq.LINGER, 0)
        bind_socket(self.socket, url, keys)
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

    def __init__(self, context: zmq.Context, urls: Sequence[str], hwm: int, linger_ms: int = -1,
                 small_buffers: bool = False, keys: CurveKeys | None = None):
        if not urls:
            raise TransportError("an outbox needs at least one downstream endpoint")
        self.urls = [check_endpoint(u) for u in urls]
        self.sockets = []
        for url in self.urls:
            sock = context.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, hwm)
            if small_buffers:
                sock.setsockopt(zmq.SNDBUF, SMALL_SOCKET_BUFFER)
            # Linger without limit: the last frames and the end-of-stream marker must
            # reach the next stage however long it stays busy (a slow encoder behind a
            # bounded linger once lost an end-of-stream and hung the run). A dead or stuck
            # peer is the supervisor's to end: it aborts (closing with linger 0) or
            # terminates what is left when the run is over.
            sock.setsockopt(zmq.LINGER, linger_ms)
            connect_socket(sock, url, keys)
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

    def send_to(self, index: int, message: Message, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Send to one chosen replica (the one that asked for a frame)."""
        parts = codec.encode(message)
        sock = self.sockets[index]
        while True:
            try:
                sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                self.sent[index] += 1
                return True
            except zmq.Again:
                if should_stop():
                    return False
                sock.poll(100, zmq.POLLOUT)

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


class CreditInbox:
    """Live flow control, source side: a detect replica asks for a frame before it gets one.

    High-water marks still let a few frames wait in each hop (and in the kernel's
    socket buffers), which a live stream pays for in latency.  With credits, a
    source hands a frame only to a replica that has said it is free, so a frame
    never waits in front of face detection; the source drops the others.
    """

    def __init__(self, context: zmq.Context, url: str, replicas: int, keys: CurveKeys | None = None):
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        bind_socket(self.socket, url, keys)
        self.credits = [0] * replicas
        self._next = 0

    def collect(self, timeout_ms: int) -> None:
        if self.socket.poll(timeout_ms, zmq.POLLIN):
            while self.socket.poll(0, zmq.POLLIN):
                replica = int(self.socket.recv())
                if 0 <= replica < len(self.credits):
                    self.credits[replica] = 1  # one frame in flight per replica, however often it asks

    def available(self) -> bool:
        return any(self.credits)

    def take(self) -> int:
        """A replica with credit (round-robin), its credit spent."""
        count = len(self.credits)
        for offset in range(count):
            index = (self._next + offset) % count
            if self.credits[index]:
                self.credits[index] = 0
                self._next = (index + 1) % count
                return index
        raise RuntimeError("no credit")

    def close(self) -> None:
        self.socket.close()


class _ToEachSource:
    """One PUSH socket to each stream's source, for live flow control's small messages. A
    message that cannot go at once is dropped: the source is gone, or has a newer one unread."""

    def __init__(self, context: zmq.Context, urls_by_stream: dict[int, str], keys: CurveKeys | None = None):
        self.sockets = {}
        for stream, url in urls_by_stream.items():
            sock = context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            connect_socket(sock, url, keys)
            self.sockets[stream] = sock

    def _tell(self, stream_id: int, payload: bytes) -> None:
        sock = self.sockets.get(stream_id)
        if sock is not None:
            try:
                sock.send(payload, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


class CreditSender(_ToEachSource):
    """Live flow control, detect side: tell each stream's source "I can take a frame"."""

    def __init__(self, context: zmq.Context, urls_by_stream: dict[int, str], replica: int,
                 keys: CurveKeys | None = None):
        super().__init__(context, urls_by_stream, keys)
        self.replica = str(replica).encode()

    def give(self, stream_id: int) -> None:
        self._tell(stream_id, self.replica)

    def give_all(self) -> None:
        for stream in self.sockets:
            self.give(stream)


class FinishedInbox:
    """Live flow control, source side: how far the sink has got with this stream.

    Credits keep frames from waiting in front of face detection, but when a later
    stage (an encoder slower than the camera) falls behind, frames still queue in
    every hop after it: seconds of delay at a few frames per second.  The sink says
    which frame it has just finished, and the source sends a new frame only while
    the pipeline can finish it within ``budget_s`` of its capture: by Little's law,
    frames in flight / frames finished per second is the wait of the newest, so at
    most ``budget_s`` x that rate may be in flight, and none while the oldest one is
    already over the budget.  Its camera reader keeps only the newest frame
    meanwhile (the rest are dropped).  A frame unfinished for ``LOST_AFTER`` budgets
    is taken as lost (a replica that crashed with it): waiting for it would stop the
    stream for good, since no new frame would be sent for the sink to finish."""

    RATE_WINDOW = 30  # finished frames the rate is measured over
    LOST_AFTER = 4.0  # budgets; at least LOST_AFTER_MIN_S
    LOST_AFTER_MIN_S = 2.0

    def __init__(self, context: zmq.Context, url: str, budget_s: float, keys: CurveKeys | None = None):
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        bind_socket(self.socket, url, keys)
        self.budget_s = budget_s
        self._unfinished: dict[int, float] = {}  # seq -> capture time, in the order sent
        self._finish_times: collections.deque[float] = collections.deque(maxlen=self.RATE_WINDOW)

    def sent(self, seq: int, capture_time: float) -> None:
        self._unfinished[seq] = capture_time

    def collect(self, timeout_ms: int) -> None:
        if not self.socket.poll(timeout_ms, zmq.POLLIN):
            return
        finished = -1
        while self.socket.poll(0, zmq.POLLIN):
            finished = max(finished, int(self.socket.recv()))
        now = time.time()
        # the sink writes a stream in order: frames before the one it finished are done with,
        # written or dropped on the way
        for seq in [s for s in self._unfinished if s <= finished]:
            del self._unfinished[seq]
            self._finish_times.append(now)

    @property
    def in_flight(self) -> int:
        """Frames sent and not yet finished."""
        return len(self._unfinished)

    def finished_per_s(self) -> float | None:
        times = self._finish_times
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])

    def over_budget(self, now: float) -> bool:
        """Whether a frame sent now would miss the budget."""
        lost_before = now - max(self.LOST_AFTER * self.budget_s, self.LOST_AFTER_MIN_S)
        while self._unfinished and next(iter(self._unfinished.values())) < lost_before:
            del self._unfinished[next(iter(self._unfinished))]
        oldest = next(iter(self._unfinished.values()), None)
        if oldest is None:
            return False
        if now - oldest > self.budget_s:
            return True
        rate = self.finished_per_s()
        return rate is not None and self.in_flight >= max(1.0, self.budget_s * rate)

    def close(self) -> None:
        self.socket.close()


class FinishedSender(_ToEachSource):
    """Live flow control, sink side: tell each live stream's source which frame is finished."""

    def finished(self, stream_id: int, seq: int) -> None:
        self._tell(stream_id, str(seq).encode())
