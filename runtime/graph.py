r"""The stage graph of a run: which replicas exist and who talks to whom.

::

    source (1 per stream) -> detect (xN) -> batch -> infer (xM) -> annotate -> sink
          |                      \______________________________/^
          |                        frames with no crops to score, |
          |                        pictures of frames with crops  |
           \______________________________________________________/
             frames the face detector skips

Every replica binds its own inbox; each upstream replica connects to all inboxes
of the next stage.  Frames go round the stages that have nothing to do with them:
the source sends the frames the face detector skips (it runs on every
``detect_every``-th) straight to annotate, and detect does the same with the frames
it cut no crops from, sparing them the hops of a full picture.  A frame with crops
is split in detection runs with video output: its picture goes straight to
annotate, its crops through batch and infer, and annotate joins the two.  ``expected_eos``
says how many end-of-stream markers a replica must count for each stream before
that stream is done there.

Annotate and sink are two stages but, by default, one process (``RunConfig.annotate_in_sink``,
``StageSpec.then``): the annotated picture goes to the encoder in memory, not over one more
ZeroMQ hop, and its label is ``annotate+sink[0]``.
"""
from __future__ import annotations

from dataclasses import replace

from pipeline.config import RunConfig, SourceConfig
from runtime.runner import StageSpec
from pipeline.transport import EndpointAllocator


def build_graph(config: RunConfig, endpoints: EndpointAllocator, control: str, report: str) -> list[StageSpec]:
    hwm = config.live_queue_size if config.live else config.queue_size
    stream_ids = [s.stream_id for s in config.streams]
    detect_in = [endpoints.endpoint(f"detect{i}") for i in range(config.detect_replicas)]
    batch_in = endpoints.endpoint("batch")
    infer_in = [endpoints.endpoint(f"infer{i}") for i in range(config.infer_replicas)]
    annotate_in = endpoints.endpoint("annotate")
    sink_in = endpoints.endpoint("sink")

    pixels = config.pixels_after_detect

    def source_config(stream):
        return SourceConfig(stream=stream, open_timeout_s=config.open_timeout_s,
                            read_timeout_s=max(config.open_timeout_s, 10.0),
                            detect_every=config.detect_every,
                            classify_every=config.classify_every,
                            detect_when_free=config.infer.mode != "swap", all_pixels=pixels,
                            reconnect=config.reconnect)

    def spec(stage, replica, stage_config, inbox, outbox, eos_per_stream):
        return StageSpec(
            stage=stage,
            replica=replica,
            config=stage_config,
            inbox=inbox,
            outbox=outbox,
            downstream=[],
            expected_eos={s: eos_per_stream for s in stream_ids} if inbox else {},
            hwm=hwm,
            live=config.live,
            control=control,
            report=report,
        )

    specs = [
        spec("source", s.stream_id, source_config(s), None, detect_in, 0) for s in config.streams
    ]
    # swapping needs the picture in infer (the swap's self-check) and the crops in annotate (pasting)
    detect = replace(config.detect, keep_image=pixels, split_frames=pixels and config.infer.mode == "detect")
    specs += [spec("detect", i, detect, url, [batch_in], 1) for i, url in enumerate(detect_in)]
    for source_or_detect in specs:
        source_or_detect.bypass = [annotate_in]
    if config.live:
        # live streams: a source sends a frame only to a detect replica that asked for one
        credit = {s.stream_id: endpoints.endpoint(f"credit{s.stream_id}") for s in config.streams if s.live}
        for source in specs[: len(config.streams)]:
            source.credit_inbox = credit.get(source.config.stream.stream_id)
        for detect in specs[len(config.streams):]:
            detect.credit_outboxes = credit
        if config.live_latency_budget_ms > 0:
            finished = {s.stream_id: endpoints.endpoint(f"finished{s.stream_id}") for s in config.streams if s.live}
            for source in specs[: len(config.streams)]:
                source.finished_inbox = finished.get(source.config.stream.stream_id)
                source.latency_budget_s = config.live_latency_budget_ms / 1000.0
    specs.append(spec("batch", 0, config.batch, batch_in, infer_in, config.detect_replicas))
    infer = replace(config.infer, threads=infer_threads(config))
    specs += [spec("infer", i, infer, url, [annotate_in], 1) for i, url in enumerate(infer_in)]
    annotate = replace(config.annotate, streams=config.streams,
                       crop_size=config.detect.crop_size, crop_margin=config.detect.crop_margin)
    # end-of-stream markers reach annotate from every infer and detect replica, and from the source
    specs.append(spec("annotate", 0, annotate, annotate_in, [sink_in], config.infer_replicas + config.detect_replicas + 1))
    sink = replace(config.sink, streams=config.streams, verdict=config.annotate.verdict)
    if config.annotate_in_sink:
        specs[-1].outbox, specs[-1].then = [], [("sink", sink)]
    else:
        specs.append(spec("sink", 0, sink, sink_in, [], 1))
    specs[-1].finished_outboxes = {s.config.stream.stream_id: s.finished_inbox
                                   for s in specs if s.stage == "source" and s.finished_inbox}
    if any(s.live for s in config.streams):
        specs[-1].await_exited = [s.label for s in specs if s.stage == "source"]  # their last health changes
    if config.sink.output_pattern:
        for s in specs:
            s.niceness = 0 if "sink" in s.stages else config.upstream_niceness
    label_of = {s.inbox: s.label for s in specs if s.inbox}
    for s in specs:
        s.downstream = [label_of[url] for url in s.outbox + s.bypass]
    return specs


def infer_threads(config: RunConfig) -> int | None:
    """ONNX Runtime threads for the model, unless the user chose: the usable cores (None) for a run
    of one live stream, where each batch is waited for and its run time is the stream's latency;
    one otherwise. In file runs and runs of several live streams the other processes keep every core
    busy and a second thread costs more in hand-offs than it saves (bench: 6-9 % more frames per
    second with one for files; four live streams' infer stage 0.18 against 0.18-0.22 cores, and
    fewer frames dropped in each of three interleaved pairs)."""
    if config.infer.threads is not None:
        return config.infer.threads
    return None if config.live and len(config.streams) == 1 else 1
