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
