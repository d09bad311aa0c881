"""Train the temporal detector (frame CNN features -> LSTM): ``dfstream train temporal``.

Sequences are ``seq_len`` consecutive cached face crops (the largest face of each
sampled frame) of one real video.  Label 0: the crops as they are.  Label 1: the
same crops self-blended (:mod:`train.sbi`) -- either with one blend setting for
the whole sequence (a steady swap) or a fresh setting per frame (a flickering
one).  The CNN is the frame detector's backbone, taken from its checkpoint and
frozen; only the LSTM and the head learn.  Use it with ``dfstream eval --temporal``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.metadata import KIND_TEMPORAL, ModelMetadata
from train import common
from train.datasets import cache_faces, gather, model_crop, to_tensor
from stages.faces import is_video

log = logging.getLogger(__name__)


def _largest_face_sequences(records: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    seqs = []
    for rec in records:
        with np.load(rec["file"]) as z:
            crops, lms, frames = z["crops"], z["landmarks"], z["frames"]
        if len(crops) == 0:
            continue
        keep = np.r_[True, frames[1:] != frames[:-1]]  # faces come largest first within a frame
        seqs.append((crops[keep], lms[keep]))
    return seqs


class SequenceSampler:
    def __init__(self, sequences, seq_len: int, size: tuple[int, int], margin: float):
        self.seqs = [s for s in sequences if len(s[0]) >= seq_len]
        if not self.seqs:
            raise ValueError(f"no video gives {seq_len} frames with a face; lower --seq-len or add videos")
        self.seq_len, self.size, self.margin = seq_len, size, margin

    def sample(self, rng: np.random.Generator, fake: bool) -> np.ndarray:
        from train.sbi import self_blend

        crops, lms = self.seqs[int(rng.integers(len(self.seqs)))]
        start = int(rng.integers(0, len(crops) - self.seq_len + 1))
        steady = rng.random() < 0.6
        blend_seed = int(rng.integers(2**31))
        jitter_seed = int(rng.integers(2**31))
        out = []
        for k in range(start, start + self.seq_len):
            wide, lm = crops[k], lms[k]
            if fake:
                wide = self_blend(wide, lm, np.random.default_rng(blend_seed if steady else blend_seed + k))
            out.append(model_crop(wide, lm, self.size, self.margin, np.random.default_rng(jitter_seed + k)))
        return np.stack(out)


def train_temporal(detector_checkpoint: str | Path, inputs: list[str], run_dir: str | Path, exclude=(), seq_len: int = 8,
                   steps: int = 200, batch_size: int = 8, lr: float = 1e-3, hidden: int = 64, seed: int = 0,
                   threads: int | None = None, resume: bool = False, every_n_frames: int = 4, max_frames: int = 100,
                   cache_dir: str | None = None, checkpoint_every: int = 50, progress: bool | None = None) -> Path:
    import torch
    from torch.nn import functional as F

    from engines.networks import build_model

    cfg = dict(detector=str(detector_checkpoint), inputs=list(inputs), exclude=list(exclude), seq_len=seq_len, steps=steps,
               batch_size=batch_size, lr=lr, hidden=hidden, seed=seed, every_n_frames=every_n_frames, max_frames=max_frames)
    run = common.RunDir.create(run_dir, cfg, resume=resume)
    common.set_threads(threads)
    common.seed_everything(seed)
    det = common.load_checkpoint(detector_checkpoint)
    if det["architecture"].get("family") != "detector":
        raise ValueError(f"{detector_checkpoint} is not a frame detector checkpoint")
    dmeta = ModelMetadata.from_dict(det["metadata"])
    items = [i for i in gather(inputs, default_label=0, exclude=tuple(exclude)) if is_video(i.path) and i.label == 0]
    if not items:
        raise ValueError("the temporal model trains on real videos: none given")
    cache = Path(cache_dir) if cache_dir else common.cache_root() / "faces"
    records = cache_faces(items, cache, every_n_frames, max_frames, max_faces=2)
    sampler = SequenceSampler(_largest_face_sequences(records), seq_len, tuple(dmeta.input_size), dmeta.crop_margin)

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
                                   "fakes": "self-blended sequences (steady or per-frame blend)"},
                         extra={"seq_len": seq_len})
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

    def __init__(self, model, metadata: ModelMetadata, seq_len: int):
        self.model, self.metadata, self.seq_len = model, metadata, seq_len

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
    return TemporalScorer(model, meta, int(meta.extra.get("seq_len", 8)))
