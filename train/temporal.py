"""Train the temporal detector (frame CNN features -> LSTM): ``dfstream train temporal``.

Sequences are ``seq_len`` consecutive cached face crops (the largest face of each
sampled frame) of one real video.  Label 0: the crops as they are.  Label 1: the
same crops self-blended (:mod:`train.sbi`) -- either with one blend setting for
the whole sequence (a steady swap) or a fresh setting per frame (a flickering
one) -- or, a ``warp_share`` of the time, a *frozen-texture* sequence: one other
frame of the clip warped to every frame's landmarks (:mod:`train.warpfake`), as a
one-shot talking-head generator animates a single photo.  The CNN is the frame
detector's backbone, taken from its checkpoint and frozen; only the LSTM and the
head learn.  Use it with ``dfstream eval --temporal`` or ``dfstream lofo score --temporal``.

Frames are sampled every ``every_n_frames`` as evaluation samples them (the model's
metadata keeps the stride): an LSTM that learnt the flicker of frames 4 apart reads
frames 10 apart as another signal.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.metadata import KIND_TEMPORAL, ModelMetadata
from train import common
from train.datasets import cache_dense_landmarks, cache_faces, gather, model_crop, to_tensor
from stages.faces import is_video

log = logging.getLogger(__name__)


def _largest_face_sequences(records: list[dict], every_n_frames: int = 1) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(crops, 5 landmarks, 68 landmarks or None) of the largest face of each frame whose index is a multiple
    of ``every_n_frames`` (a pack's faces may be cut at a finer stride than the model reads), per video."""
    seqs = []
    for rec in records:
        with np.load(rec["file"]) as z:
            crops, lms, frames = z["crops"], z["landmarks"], z["frames"]
        if len(crops) == 0:
            continue
        keep = np.r_[True, frames[1:] != frames[:-1]]  # faces come largest first within a frame
        keep &= frames % every_n_frames == 0
        if not keep.any():
            continue
        dense = np.load(rec["dense"])[keep] if rec.get("dense") else None
        seqs.append((crops[keep], lms[keep], dense))
    return seqs


class SequenceSampler:
    """Draws training sequences: a real window of a video, or its fake counterpart (see the module's docstring)."""

    def __init__(self, sequences, seq_len: int, size: tuple[int, int], margin: float, warp_share: float = 0.0):
        self.seqs = [s for s in sequences if len(s[0]) >= seq_len]
        if not self.seqs:
            raise ValueError(f"no video gives {seq_len} frames with a face; lower --seq-len or add videos")
        self.seq_len, self.size, self.margin, self.warp_share = seq_len, size, margin, float(warp_share)
        if self.warp_share and not any(len(s[0]) > seq_len for s in self.seqs):
            raise ValueError(f"frozen-texture fakes need a video with a frame outside a {seq_len}-frame window to warp from")

    def sample(self, rng: np.random.Generator, fake: bool) -> np.ndarray:
        from train.sbi import self_blend

        crops, lms, dense = self.seqs[int(rng.integers(len(self.seqs)))]
        start = int(rng.integers(0, len(crops) - self.seq_len + 1))
        window = range(start, start + self.seq_len)
        jitter_seed = int(rng.integers(2**31))
        frames = None
        if fake and self.warp_share and rng.random() < self.warp_share:
            frames = frozen_texture(crops, lms, dense, window, rng)
        if frames is None:
            steady = rng.random() < 0.6
            blend_seed = int(rng.integers(2**31))
            frames = [self_blend(crops[k], lms[k], np.random.default_rng(blend_seed if steady else blend_seed + k))
                      if fake else crops[k] for k in window]
        return np.stack([model_crop(frame, lms[k], self.size, self.margin, np.random.default_rng(jitter_seed + k))
                         for frame, k in zip(frames, window)])


def frozen_texture(crops: np.ndarray, lms: np.ndarray, dense: np.ndarray | None, window: range,
                   rng: np.random.Generator) -> list[np.ndarray] | None:
    """One frame of the clip outside ``window``, warped to each frame of the window: the texture frozen
    while the face moves, one warp mode and resampling for the whole sequence (one generator made it).
    The source is chosen against the window's middle frame (:func:`train.warpfake.choose_source`);
    None when no frame outside the window moved enough, or too much."""
    from train.warpfake import SOURCE_TRIES, choose_source, warp_fake

    outside = np.array([k for k in range(len(crops)) if k not in window])
    if not outside.size:
        return None
    tried = rng.choice(outside, min(SOURCE_TRIES, len(outside)), replace=False)
    points = dense if dense is not None and np.isfinite(dense[list(window)]).all() and np.isfinite(dense[tried]).all() else lms
    middle = window[len(window) // 2]
    chosen = choose_source(points[middle], [points[k] for k in tried], rng)
    if chosen is None:
        return None
    source = int(tried[chosen])
    warp_seed = int(rng.integers(2**31))  # the same draws for every frame: one mode, one mask, one resampling
    return [warp_fake(crops[k], lms[k], crops[source], points[source], points[k], np.random.default_rng(warp_seed),
                      dense=None if points is lms else dense[k]) for k in window]


def train_temporal(detector_checkpoint: str | Path, inputs: list[str], run_dir: str | Path, exclude=(), seq_len: int = 8,
                   steps: int = 200, batch_size: int = 8, lr: float = 1e-3, hidden: int = 64, seed: int = 0,
                   threads: int | None = None, resume: bool = False, every_n_frames: int = 10, max_frames: int = 100,
                   warp_fakes: float = 0.0, landmarks: str | None = "auto", cache_dir: str | None = None,
                   checkpoint_every: int = 50, packs: tuple[str, ...] = (), progress: bool | None = None) -> Path:
    """Train the temporal head on the real videos of ``inputs`` (media, cut into faces here) and of face
    ``packs`` (:mod:`train.pack`, cut at a stride that ``every_n_frames`` is a multiple of)."""
    import torch
    from torch.nn import functional as F

    from engines.networks import build_model

    from train.pack import landmark_model_for, read_pack_header, unpack_all

    if not 0.0 <= warp_fakes <= 1.0:
        raise ValueError(f"--warp-fakes is a share of the fake sequences, between 0 and 1: got {warp_fakes}")
    headers = {pack: read_pack_header(pack) for pack in packs}
    for pack, header in headers.items():
        stride = header.get("every_n_frames")
        if stride is None:
            raise ValueError(f"{pack} does not say which frames its faces were cut from: pack the media again "
                             "(`dfstream train pack`) to train a temporal model on it")
        if every_n_frames % stride:
            raise ValueError(f"{pack} holds faces cut every {stride} frames; --every-n-frames {every_n_frames} "
                             "is not a multiple of it: pack the media again (`dfstream train pack --every-n-frames`)")
    landmark_model = landmark_model_for(packs, landmarks) if warp_fakes else None
    cfg = dict(detector=str(detector_checkpoint), inputs=list(inputs), packs=list(packs), exclude=list(exclude),
               seq_len=seq_len, steps=steps,
               batch_size=batch_size, lr=lr, hidden=hidden, seed=seed, every_n_frames=every_n_frames, max_frames=max_frames,
               warp_fakes=warp_fakes, landmarks=landmark_model)
    run = common.RunDir.create(run_dir, cfg, resume=resume)
    common.set_threads(threads)
    common.seed_everything(seed)
    det = common.load_checkpoint(detector_checkpoint)
    if det["architecture"].get("family") != "detector":
        raise ValueError(f"{detector_checkpoint} is not a frame detector checkpoint")
    dmeta = ModelMetadata.from_dict(det["metadata"])
    items = [i for i in gather(inputs, default_label=0, exclude=tuple(exclude)) if is_video(i.path) and i.label == 0]
    cache = Path(cache_dir) if cache_dir else common.cache_root() / "faces"
    packed = [r for r in unpack_all(packs, cache, tuple(exclude)) if r["label"] == 0 and is_video(r["path"])]
    if not items and not packed:
        raise ValueError("the temporal model trains on real videos: none given (--real or --pack)")
    records = packed + cache_faces(items, cache, every_n_frames, max_frames, max_faces=2)
    if landmark_model:  # the warp's field follows 68 points when a landmark model is installed, else the 5
        records = cache_dense_landmarks(records, landmark_model)
    sampler = SequenceSampler(_largest_face_sequences(records, every_n_frames), seq_len, tuple(dmeta.input_size),
                              dmeta.crop_margin, warp_share=warp_fakes)

    architecture = {"family": "temporal", "backbone": det["architecture"]["backbone"], "hidden": hidden, "layers": 1,
                    "freeze_backbone": True}
    model = build_model(architecture)
    backbone_state = {k[len("backbone."):]: v for k, v in det["state_dict"].items() if k.startswith("backbone.")}
    missing, unexpected = model.backbone.load_state_dict(backbone_state, strict=False)
    if missing:  # a backbone left partly at random would still train, and mean nothing
        raise ValueError(f"{detector_checkpoint}: its backbone lacks {len(missing)} weights of {architecture['backbone']} "
                         f"(first: {missing[0]})")
    log.info("backbone from %s (classifier dropped: %s)", detector_checkpoint, ", ".join(unexpected) or "-")
    params = list(model.lstm.parameters()) + list(model.head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    meta = ModelMetadata(kind=KIND_TEMPORAL, name=f"{dmeta.name}-temporal", input_size=dmeta.input_size,
                         color_order=dmeta.color_order, mean=dmeta.mean, std=dmeta.std, crop_margin=dmeta.crop_margin,
                         output="p_fake", threshold=0.5,
                         architecture=f"{architecture['backbone']} features (frozen, from {dmeta.name}) -> LSTM({hidden}) -> sigmoid",
                         training={"detector": str(detector_checkpoint), "videos": [r["path"] for r in records], "seq_len": seq_len,
                                   "fakes": "self-blended sequences (steady or per-frame blend)"
                                            + (f"; {warp_fakes:.0%} frozen-texture warps ({landmark_model or '5-point'} field)"
                                               if warp_fakes else "")},
                         extra={"seq_len": seq_len, "every_n_frames": every_n_frames})
    step = 0
    if resume and run.latest_checkpoint():
        step, _ = common.resume_from(common.load_checkpoint(run.latest_checkpoint()), model, optimizer)
    writer = common.tensorboard_writer(run.path, purge_step=step or None)
    rng = np.random.default_rng(seed + step)
    bar = common.progress(total=steps, initial=step, desc="train temporal", disable=None if progress is None else not progress)
    model.lstm.train()
    while step < steps:
        labels = np.array([i % 2 for i in range(batch_size)], np.float32)
        seqs = np.stack([sampler.sample(rng, bool(y)) for y in labels])  # B, T, H, W, 3
        b, t = seqs.shape[:2]
        x = to_tensor(seqs.reshape(b * t, *seqs.shape[2:]), meta).reshape(b, t, 3, *seqs.shape[2:4])
        logits = model.logits(x)
        loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        writer.add_scalar("train/loss", float(loss.detach()), step)
        writer.add_scalar("train/accuracy", float(((logits.detach() > 0).float().numpy() == labels).mean()), step)
        if step % checkpoint_every == 0 or step == steps:
            common.save_checkpoint(run.checkpoint_path(), model, architecture, meta, optimizer, step=step)
    bar.close()
    writer.close()
    (run.path / "videos.json").write_text(json.dumps(records, indent=1))
    return run.checkpoint_path()


class TemporalScorer:
    """Scores a crop sequence (uint8 BGR T x H x W x 3) with a temporal checkpoint: mean P(fake) over windows."""

    def __init__(self, model, metadata: ModelMetadata, seq_len: int, every_n_frames: int | None = None):
        self.model, self.metadata, self.seq_len = model, metadata, seq_len
        self.every_n_frames = every_n_frames  # the stride it learnt on; None for a model that did not record it

    def score_sequence(self, crops_bgr: np.ndarray) -> float:
        import torch

        crops = np.asarray(crops_bgr)
        if len(crops) == 0:
            return float("nan")
        if len(crops) < self.seq_len:  # repeat the last crop to fill one window
            crops = np.concatenate([crops, np.repeat(crops[-1:], self.seq_len - len(crops), 0)])
        stride = max(1, self.seq_len // 2)
        starts = list(range(0, len(crops) - self.seq_len + 1, stride))
        x = to_tensor(crops, self.metadata)
        windows = torch.stack([x[s:s + self.seq_len] for s in starts])
        with torch.no_grad():
            return float(self.model(windows).mean())


def load_temporal(path: str | Path, expect_input: tuple[int, int] | None = None) -> TemporalScorer:
    from engines.networks import build_model

    ckpt = common.load_checkpoint(path)
    if ckpt["architecture"].get("family") != "temporal":
        raise ValueError(f"{path} is not a temporal model checkpoint")
    meta = ModelMetadata.from_dict(ckpt["metadata"])
    if expect_input and tuple(meta.input_size) != tuple(expect_input):
        raise ValueError(f"{path} wants {meta.input_size} crops but the frame detector cuts {expect_input}")
    model = build_model(ckpt["architecture"])
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    stride = meta.extra.get("every_n_frames")
    return TemporalScorer(model, meta, int(meta.extra.get("seq_len", 8)), None if stride is None else int(stride))
