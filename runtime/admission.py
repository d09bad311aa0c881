"""Live admission: whether a live source's next frame may enter the pipeline now, and where to.

Two rules keep a live stream from building latency, and both are applied here:

* credit hand-over: a frame due for face detection goes only to a detect replica that has
  asked for one (:class:`pipeline.transport.CreditInbox`), so no frame waits in a queue in
  front of the expensive work.  A source whose config allows it (``detect_when_free``) sends
  the due frame round a busy detector instead (:attr:`detector_free`); otherwise it waits here
  while its camera reader drops frames.
* latency budget: while the frames in flight cannot be finished within the budget of their
  capture (:class:`pipeline.transport.FinishedInbox`, fed by the sink), no new frame enters.
"""
from __future__ import annotations

import time

from pipeline.messages import Packet
from pipeline.stage import Source
from pipeline.transport import CreditInbox, FinishedInbox


class LiveAdmission:
    def __init__(self, credits: CreditInbox | None, finished: FinishedInbox | None):
        self.credits = credits
        self.finished = finished
        self.dropped_over_budget = 0  # frames the camera reader dropped while the run was over its budget

    def detector_free(self) -> bool:
        """Whether a detect replica has asked for a frame and not yet had one."""
        self.credits.collect(0)
        return self.credits.available()

    def admit(self, source: Source) -> bool:
        """Whether the source may produce its next frame now; False: wait a little and ask again
        (the calls block up to 100 ms, so the caller's loop does not spin)."""
        if self.credits is not None and source.detect_due() and not source.config.detect_when_free:
            self.credits.collect(0 if self.credits.available() else 100)
            if not self.credits.available():
                return False
        if self.finished is not None:
            self.finished.collect(0)
            if self.finished.over_budget(time.time()):
                dropped = source.dropped
                self.finished.collect(20)
                self.dropped_over_budget += source.dropped - dropped
                return False
        return True

    def sent(self, packet: Packet) -> int | None:
        """Note the frames of ``packet`` as in flight; the detect replica (its index) whose credit
        it takes, when it carries a frame for detection (None: send it as any other packet)."""
        if self.finished is not None:
            for message in packet:
                self.finished.sent(message.seq, message.capture_time)
        if self.credits is not None and any(message.to_detect for message in packet):
            return self.credits.take()
        return None
