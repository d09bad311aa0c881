"""Stage micro-benchmarks: one hop of transport, face detection, model inference.

- **transport**: a sender process pushes frame messages (``pipeline.codec`` over
  ``pipeline.transport`` Outbox -> Inbox, as between two stages) of 720p and
  1080p frames, over ipc and tcp, in the I420 layout frames travel in (and 720p
  BGR for comparison).  Saturated: messages per second and the CPU
  both ends spend per message.  Unloaded: one message every 20 ms, one-way
  latency (sender's send time -> receiver has decoded it).
- **face detection**: frames of the clip through each face detector at the
  pipeline's downscale size (``DetectConfig.detect_max_side``), and YuNet on the
  full frame (what the baseline does).
- **infer**: faces per second at batch 1, 4 and 16 on each available engine.
"""
from __future__ import annotations

import time

import numpy as np

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}


# -- transport ------------------------------------------------------------------
def _frame_shape(size: str, pixel_format: str) -> tuple:
    from pipeline import pictures

    height, width = SIZES[size]
    return (height * 3 // 2, width) if pixel_format == pictures.YUV420P else (height, width, 3)


def _sender(url: str, transport: str, shape: tuple, pixel_format: str, count: int, hwm: int, interval_s: float,
            conn) -> None:
    import zmq

    from pipeline.messages import FrameMessage
    from pipeline.transport import Outbox

    context = zmq.Context()
    outbox = Outbox(context, [url], hwm)
    image = np.random.default_rng(0).integers(0, 255, size=shape, dtype=np.uint8)
    conn.recv()  # the receiver is bound and ready
    cpu0, t0 = time.process_time(), time.perf_counter()
    for seq in range(count):
        message = FrameMessage(stream_id=0, seq=seq, frame_index=seq, pts=seq, time_base=(1, 30),
                               capture_time=time.time(), image=image, pixel_format=pixel_format)
        outbox.send([message])
        if interval_s:
            time.sleep(interval_s)
    conn.send({"cpu_s": time.process_time() - cpu0, "seconds": time.perf_counter() - t0})
    outbox.close()
    context.term()


def transport_hop(transport: str, size: str, count: int, hwm: int = 8, interval_s: float = 0.0,
                  pixel_format: str = "yuv420p") -> dict:
    import multiprocessing

    import zmq

    from pipeline.transport import EndpointAllocator, Inbox

    endpoints = EndpointAllocator(transport)
    url = endpoints.endpoint("bench-hop")
    context = zmq.Context()
    inbox = Inbox(context, url, hwm)
    spawn = multiprocessing.get_context("spawn")
    here, there = spawn.Pipe()
    sender = spawn.Process(target=_sender, args=(url, transport, _frame_shape(size, pixel_format), pixel_format, count, hwm,
                                                         interval_s, there))
    sender.start()
    try:
        here.send("go")
        latencies = []
        checksum = 0
        cpu0 = time.process_time()
        first = last = None
        for _ in range(count):
            if not inbox.poll(30000):
                raise RuntimeError(f"transport {transport} {size}: no message for 30 s")
            packet = inbox.receive()
            now = time.time()
            first = first or time.perf_counter()
            last = time.perf_counter()
            latencies.append(now - packet[0].capture_time)
            checksum += int(packet[0].image.flat[0])  # touch the buffer, as a stage would
        cpu_receiver = time.process_time() - cpu0
        sent = here.recv()
    finally:
        sender.join(10.0)
        if sender.is_alive():
            sender.terminate()
        inbox.close()
        context.term()
        endpoints.cleanup()
    nbytes = int(np.prod(_frame_shape(size, pixel_format)))
    span = (last - first) if last and first and last > first else None
    lat = np.asarray(latencies) * 1000.0
    out = {
        "transport": transport,
        "size": size,
        "pixel_format": pixel_format,
        "frame_mb": round(nbytes / 1e6, 2),
        "messages": count,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3)},
    }
    if not interval_s:
        rate = (count - 1) / span if span else None
        out.update({
            "msgs_per_s": round(rate, 1) if rate else None,
            "gb_per_s": round(rate * nbytes / 1e9, 2) if rate else None,
            "cpu_ms_per_msg": {
                "sender": round(1000 * sent["cpu_s"] / count, 3),
                "receiver": round(1000 * cpu_receiver / count, 3),
                "total": round(1000 * (sent["cpu_s"] + cpu_receiver) / count, 3),
            },
        })
    return out


def run_transport(quick: bool = False) -> list[dict]:
    results = []
    cases = [(t, s, "yuv420p") for t in ("ipc", "tcp") for s in ("720p", "1080p")] + [("ipc", "720p", "bgr24")]
    for transport, size, pixel_format in cases:
        saturated = transport_hop(transport, size, count=40 if quick else 400, pixel_format=pixel_format)
        unloaded = transport_hop(transport, size, count=10 if quick else 100, interval_s=0.02, pixel_format=pixel_format)
        saturated["unloaded_latency_ms"] = unloaded["latency_ms"]
        saturated["saturated_latency_ms"] = saturated.pop("latency_ms")
        results.append(saturated)
    return results


# -- face detection ---------------------------------------------------------------
def load_frames(clip: str, count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over the clip, as BGR arrays."""
    import av

    with av.open(clip) as container:
        video = container.streams.video[0]
        video.thread_type = "AUTO"
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video)]
    if len(frames) <= count:
        return frames
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [frames[i] for i in picks]


def _timed_loop(fn, items, min_seconds: float, warmup: int = 2) -> tuple[float, int, list]:
    for item in items[:warmup]:
        fn(item)
    done, outputs = 0, []
    started = time.perf_counter()
    while True:
        for item in items:
            outputs.append(fn(item))
            done += 1
        if time.perf_counter() - started >= min_seconds:
            break
    return time.perf_counter() - started, done, outputs


def run_face_detection(clip: str, detectors: list[tuple[str, str, str | None, int | None]],
                       quick: bool = False) -> list[dict]:
    """``detectors``: (label, kind, model path, max side or None for the full frame)."""
    from engines.face_detectors import create_face_detector
    from pipeline.config import DetectConfig

    frames = load_frames(clip, 12 if quick else 40)
    results = []
    for label, kind, path, max_side in detectors:
        try:
            detector = create_face_detector(kind, path, DetectConfig().min_face_score)
        except Exception as exc:  # a detector this machine lacks (insightface, a model file): say so
            results.append({"detector": label, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        if max_side:
            fn = lambda image: len(detector.detect_downscaled(image, max_side))
        else:
            fn = lambda image: len(detector.detect(image))
        cpu_before = time.process_time()
        seconds, done, faces = _timed_loop(fn, frames, 0.5 if quick else 3.0)
        cpu_seconds = time.process_time() - cpu_before  # includes the warm-up calls: a slight overestimate
        height, width = frames[0].shape[:2]
        factor = max(1.0, max(height, width) / max_side) if max_side else 1.0
        results.append({
            "detector": label,
            "kind": kind,
            "input": f"{round(width / factor)}x{round(height / factor)}",
            "fps": round(done / seconds, 1),
            "ms_per_frame": round(1000 * seconds / done, 2),
            "cpu_ms_per_frame": round(1000 * cpu_seconds / done, 2),
            "faces_per_frame": round(float(np.mean(faces)), 2),
        })
    return results


# -- inference --------------------------------------------------------------------
def run_infer(models: list[tuple[str, str]], batches=(1, 4, 16), quick: bool = False) -> list[dict]:
    """``models``: (engine, model path) pairs; faces per second at each batch size."""
    from engines.loader import load_engine
    from engines.metadata import KIND_DETECTOR

    results = []
    runs = []
    for engine_name, path in models:
        runs.append((engine_name, path, None))
        if engine_name == "onnxruntime":
            runs.append((engine_name, path, 1))  # one intra-op thread: no thread pool
    for engine_name, path, threads in runs:
        try:
            engine = load_engine(path, engine=engine_name, kind=KIND_DETECTOR, threads=threads)
        except Exception as exc:
            results.append({"engine": engine_name, "model": path, "skipped": f"{type(exc).__name__}: {exc}"})
            continue
        height, width = engine.metadata.input_size
        rng = np.random.default_rng(0)
        for batch in batches:
            crops = rng.integers(0, 255, size=(batch, height, width, 3), dtype=np.uint8)
            seconds, done, _ = _timed_loop(engine.run, [crops], 0.5 if quick else 2.0, warmup=3)
            # as the pipeline calls it: a small batch now and then (every 100 ms, as with one 30 fps
            # stream classified every 3rd frame); CPU per call includes what the runtime burns idling
            count = 5 if quick else 30
            cpu0 = time.process_time()
            for _ in range(count):
                engine.run(crops)
                time.sleep(0.1)
            sparse_cpu_ms = 1000 * (time.process_time() - cpu0) / count
            results.append({
                "engine": engine_name,
                "threads": threads or "usable cores",
                "backend": engine.describe(),
                "input": f"{width}x{height}",
                "batch": batch,
                "faces_per_s": round(done * batch / seconds, 1),
                "ms_per_batch": round(1000 * seconds / done, 2),
                "cpu_ms_per_batch_every_100ms": round(sparse_cpu_ms, 2),
            })
        engine.close()
    return results
