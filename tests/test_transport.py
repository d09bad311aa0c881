"""The ZeroMQ hops: end-of-stream reaches every replica; frames go to replicas with room."""
import math

import numpy as np
import pytest
import zmq

from pipeline.messages import EndOfStream, FrameMessage
from pipeline.transport import CreditInbox, CreditSender, EndpointAllocator, FinishedInbox, FinishedSender, Inbox, Outbox


def _frame(seq):
    return [FrameMessage(stream_id=0, seq=seq, frame_index=seq, pts=seq, time_base=(1, 25), capture_time=0.0,
                         image=np.full((4, 4, 3), seq, np.uint8))]


def test_private_ipc_endpoints_live_in_a_directory_only_we_can_enter():
    import os
    import stat

    endpoints = EndpointAllocator("ipc")
    try:
        assert endpoints.endpoint("x").startswith("ipc://")
        assert stat.S_IMODE(os.stat(endpoints.directory).st_mode) == 0o700
    finally:
        endpoints.cleanup()
    assert not os.path.exists(endpoints.directory)


def test_tcp_endpoints_bind_to_loopback_only():
    assert EndpointAllocator("tcp").endpoint("x").startswith("tcp://127.0.0.1:")


def test_end_of_stream_is_broadcast_to_every_replica_and_frames_are_shared():
    context = zmq.Context()
    endpoints = EndpointAllocator("ipc")
    try:
        urls = [endpoints.endpoint(f"r{i}") for i in range(3)]
        inboxes = [Inbox(context, url, hwm=8) for url in urls]
        outbox = Outbox(context, urls, hwm=8)
        for seq in range(6):
            outbox.send(_frame(seq))
        outbox.broadcast(EndOfStream(0, 6, 0))
        got = []
        for inbox in inboxes:
            messages = []
            while inbox.poll(1000):
                messages.append(inbox.receive())
                if isinstance(messages[-1], EndOfStream):
                    break
            assert isinstance(messages[-1], EndOfStream)
            got += [m[0].seq for m in messages[:-1]]
            assert len(messages) > 1  # round-robin: every replica got frames
        assert sorted(got) == list(range(6))
        outbox.close(0)
        for inbox in inboxes:
            inbox.close()
    finally:
        context.term()
        endpoints.cleanup()


@pytest.fixture
def ipc():
    """A ZeroMQ context and private ipc endpoints; sockets left open by a failed test are closed."""
    context = zmq.Context()
    endpoints = EndpointAllocator("ipc")
    yield context, endpoints
    context.destroy(linger=0)
    endpoints.cleanup()


def test_credits_name_the_replica_that_asked_and_count_once(ipc):
    context, endpoints = ipc
    url = endpoints.endpoint("credit")
    inbox = CreditInbox(context, url, replicas=2)
    sender = CreditSender(context, {0: url}, replica=1)
    sender.give(0)
    sender.give(0)
    inbox.collect(1000)
    assert inbox.available()
    assert inbox.take() == 1
    inbox.collect(50)
    assert not inbox.available()  # asking twice still means one frame in flight


def _collect_until(inbox: FinishedInbox, condition, timeout_s: float = 2.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        inbox.collect(50)


def test_a_live_source_holds_new_frames_while_the_pipeline_is_behind_its_latency_budget(ipc):
    import time

    context, endpoints = ipc
    url = endpoints.endpoint("finished")
    inbox = FinishedInbox(context, url, budget_s=0.5)
    sink = FinishedSender(context, {0: url})
    now = time.time()
    assert not inbox.over_budget(now)  # nothing in flight
    inbox.sent(0, now - 0.6)
    assert inbox.over_budget(now)  # its oldest frame is already older than the budget
    sink.finished(0, 0)
    _collect_until(inbox, lambda: inbox.in_flight == 0)
    assert not inbox.over_budget(time.time())

    # the sink finishes about 4 frames a second: 0.5 s of budget lets about 2 be in flight
    for seq in range(1, 6):
        inbox.sent(seq, time.time())
        time.sleep(0.25)
        sink.finished(0, seq)
        _collect_until(inbox, lambda: inbox.in_flight == 0)
    rate = inbox.finished_per_s()
    assert rate is not None and 2.0 < rate < 4.5  # one every 0.25 s, give or take a busy machine
    seq = 6
    while not inbox.over_budget(time.time()):
        inbox.sent(seq, time.time())
        seq += 1
    # by Little's law the newest frame would wait in_flight / rate: no more than the budget
    assert inbox.in_flight == math.ceil(max(1.0, 0.5 * rate)) >= 2
    sink.finished(0, seq - 1)  # frames before a finished one are done with too (dropped on the way)
    _collect_until(inbox, lambda: inbox.in_flight == 0)
    assert not inbox.over_budget(time.time())
    # a frame lost on the way (a replica crashed with it) must not hold the stream for good
    inbox.sent(8, time.time() - 2.5)
    assert not inbox.over_budget(time.time()) and inbox.in_flight == 0


# -- CurveZMQ for hops to other hosts ----------------------------------------------------------------

def _free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_keys_are_written_private_and_read_back(tmp_path):
    import os
    import stat

    from pipeline.transport import KEY_FILES, CurveKeys, write_keys

    written = write_keys(tmp_path / "keys")
    assert sorted(p.name for p in written) == sorted(KEY_FILES)
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in written)
    keys = CurveKeys.load(tmp_path / "keys")
    assert len(keys.server_public) == 40 and keys.server_public != keys.client_public
    with pytest.raises(FileExistsError):
        write_keys(tmp_path / "keys")  # never overwritten: the other hosts hold the same


def test_endpoints_to_other_hosts_are_told_from_local_ones():
    from pipeline.transport import crosses_hosts

    for local in ("ipc:///tmp/x", "inproc://x", "tcp://127.0.0.1:5000", "tcp://localhost:5000", "tcp://[::1]:5000",
                  "tcp://127.3.4.5:1"):
        assert not crosses_hosts(local), local
    for remote in ("tcp://10.0.0.5:5000", "tcp://0.0.0.0:5000", "tcp://*:5000", "tcp://gpu-box:5000",
                   "tcp://[2001:db8::1]:5000"):
        assert crosses_hosts(remote), remote


def test_a_plain_tcp_endpoint_to_another_host_is_refused_without_keys():
    from pipeline.transport import TransportError

    context = zmq.Context()
    try:
        with pytest.raises(TransportError, match="needs CurveZMQ keys") as error:
            Outbox(context, ["tcp://192.0.2.7:5555"], hwm=4)
        assert "\n" not in str(error.value)
        with pytest.raises(TransportError, match="needs CurveZMQ keys"):
            Inbox(context, "tcp://0.0.0.0:5555", hwm=4)
    finally:
        context.destroy(linger=0)


def _curve_pair(tmp_path, monkeypatch, client_keys):
    """An inbox and an outbox over CURVE on loopback: loopback stands in for another host
    (nothing may leave this machine), so the test makes every tcp endpoint count as remote."""
    import pipeline.transport as transport

    monkeypatch.setattr(transport, "crosses_hosts", lambda url: url.startswith("tcp://"))
    server_keys = transport.CurveKeys.load(tmp_path / "keys")
    url = f"tcp://127.0.0.1:{_free_loopback_port()}"
    server_context, client_context = zmq.Context(), zmq.Context()
    inbox = Inbox(server_context, url, hwm=8, keys=server_keys)
    outbox = Outbox(client_context, [url], hwm=8, linger_ms=0, keys=client_keys)
    return inbox, outbox, server_context, client_context


def _close(inbox, outbox, server_context, client_context):
    from pipeline.transport import release_context

    outbox.close(linger_ms=0)
    inbox.close()
    release_context(server_context)
    server_context.term()
    client_context.term()


def test_two_sockets_with_the_runs_keys_exchange_messages_over_curve(tmp_path, monkeypatch):
    from pipeline.transport import CurveKeys, write_keys

    write_keys(tmp_path / "keys")
    inbox, outbox, *contexts = _curve_pair(tmp_path, monkeypatch, CurveKeys.load(tmp_path / "keys"))
    try:
        assert inbox.socket.curve_server and outbox.sockets[0].mechanism == zmq.CURVE
        for seq in range(3):
            assert outbox.send(_frame(seq))
        got = []
        while len(got) < 3 and inbox.poll(5000):
            got.append(inbox.receive()[0].seq)
        assert got == [0, 1, 2]
    finally:
        _close(inbox, outbox, *contexts)


def test_a_client_with_the_wrong_key_gets_nothing_through(tmp_path, monkeypatch):
    from dataclasses import replace

    from pipeline.transport import CurveKeys, write_keys

    write_keys(tmp_path / "keys")
    write_keys(tmp_path / "other")
    right, other = CurveKeys.load(tmp_path / "keys"), CurveKeys.load(tmp_path / "other")
    # the server's public key is right (the handshake can start) but the client's pair is another run's
    intruder = replace(other, server_public=right.server_public)
    inbox, outbox, *contexts = _curve_pair(tmp_path, monkeypatch, intruder)
    try:
        outbox.send(_frame(0), should_stop=lambda: True)  # queued at most: the handshake is refused
        assert not inbox.poll(1500)
    finally:
        _close(inbox, outbox, *contexts)


def test_a_received_picture_is_the_messages_own_memory_and_can_be_drawn_on_in_place():
    # annotate draws on pictures as they arrive, without copying them (stages/annotate.py)
    context = zmq.Context()
    endpoints = EndpointAllocator("ipc")
    try:
        url = endpoints.endpoint("draw")
        inbox, outbox = Inbox(context, url, hwm=8), Outbox(context, [url], hwm=8)
        sent = _frame(5)
        sent[0].image = np.full((720, 1280, 3), 5, np.uint8)  # large enough for ZeroMQ's zero-copy receive
        outbox.send(sent)
        assert inbox.poll(2000)
        picture = inbox.receive()[0].image
        assert picture.flags.writeable
        picture[:10] = 255
        assert (picture[:10] == 255).all() and (picture[10:] == 5).all()
        assert (sent[0].image == 5).all()  # the sender's array is untouched
        outbox.close(0)
        inbox.close()
    finally:
        context.term()
        endpoints.cleanup()
