"""Train the frame-level deepfake detector: ``dfstream train detector``.

Data: real faces (SBI synthesises the fakes on the fly -- the default), and/or
labelled real/fake folders or list files.  Faces come from the pipeline's own
decode + detect stages (:mod:`stages.faces`) and are cached once (:mod:`train.datasets`).

Run folder (``--run-dir``)::

    config.json                  the configuration used (config.resume-N.json on resume)
    events.out.tfevents.*        TensorBoard: loss, lr, accuracy, val AUC/loss, sample crops with scores
    checkpoints/last.pt          dfstream-checkpoint-v1, model + optimizer + step (for --resume)
                                 (--init-from CKPT instead starts a new run from CKPT's weights only:
                                 fresh optimiser and learning-rate schedule, step 0)
    checkpoints/step00001000.pt  periodic snapshots
    checkpoints/ema.pt           with --ema: the moving average of the weights, a checkpoint of its own
    faces.json                   which media files were used for training / validation

Export the result with ``dfstream export RUN/checkpoints/last.pt -o detector.onnx``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from engines.metadata import ModelMetadata
from train import common
from train.datasets import (FaceDataset, cache_aligned_fakes, cache_dense_landmarks, cache_faces, load_cached,
                            to_tensor, training_media)
from train.loop import LoopConfig, TrainingLoop, tensorboard_writer
from train.pack import landmark_model_for, unpack_all
from train.settings import DetectorTraining

log = logging.getLogger(__name__)

DEFAULTS = asdict(DetectorTraining())  # the settings a run starts from (train/settings.py)


EMA_CHECKPOINT = "ema.pt"


def _weight_average(model, decay: float | None):
    """timm's exponential moving average of the weights (warmed up: early steps weigh more), or None."""
    if decay is None:
        return None
    if not 0.0 < float(decay) < 1.0:
        raise ValueError(f"--ema {decay}: the decay must lie between 0 and 1 (0.999 is usual)")
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=float(decay), use_warmup=True)


def _optimizer(model, cfg: dict):
    """AdamW; with ``sam`` wrapped in sharpness-aware minimisation (pytorch-optimizer's SAM), as the
    SBI paper trains: each step takes the gradient at weights nudged uphill by ``rho`` and applies it
    at the original weights, which favours flat minima that generalise better (and costs two passes)."""
    import torch

    options = dict(lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    groups = _parameter_groups(model, float(cfg["lr"]))
    if cfg.get("sam") is None:
        return torch.optim.AdamW(groups, **options)
    if not float(cfg["sam"]) > 0:
        raise ValueError(f"--sam {cfg['sam']}: the radius must be positive (0.05 is usual)")
    from pytorch_optimizer import SAM

    return SAM(groups, torch.optim.AdamW, rho=float(cfg["sam"]), **options)


def _parameter_groups(model, lr: float) -> list[dict]:
    """The trainable parameters, in one group at ``lr``; a pretrained trunk that asks for a smaller
    rate (``trunk_lr_scale``: dlib's, which has no batch norm to steady it) gets its own group, so
    the new classifier learns at full speed while the trunk moves slowly from what it knows.
    Frozen parameters are left out."""
    scale = float(getattr(model.backbone, "trunk_lr_scale", 1.0))
    trunk = {id(p) for p in model.backbone.trunk.parameters()} if scale != 1.0 else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in trunk]}]
    if trunk:
        groups.append({"params": [p for p in trainable if id(p) in trunk], "lr": lr * scale})
    return [g for g in groups if g["params"]]


def _uphill_pass(model, objective):
    """SAM's second pass, at the perturbed weights: it only measures, so BatchNorm's running
    statistics keep learning from the real weights alone."""
    from pytorch_optimizer import disable_running_stats, enable_running_stats

    disable_running_stats(model)
    loss = objective()[0]
    loss.backward()
    enable_running_stats(model)
    return loss


def _blend_map_loss(map_logits, target):
    """Binary cross-entropy between the predicted blend map and the boundary map averaged over each
    feature cell, over the samples whose blend is known (a labelled fake's map is NaN)."""
    import torch
    from torch.nn import functional as F

    cells = F.adaptive_avg_pool2d(target.unsqueeze(1), map_logits.shape[-2:]).squeeze(1)
    known = ~torch.isnan(cells).flatten(1).any(dim=1)
    if not bool(known.any()):
        return map_logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(map_logits[known], cells[known])


def _load_weights(model, state_dict, source: str):
    """Load ``state_dict``; only the training-only blend-map head may be missing or left over."""
    result = model.load_state_dict(state_dict, strict=False)
    stray = [k for k in list(result.missing_keys) + list(result.unexpected_keys) if not k.startswith("blend_head.")]
    if stray:
        raise ValueError(f"{source}: its weights do not fit this network ({', '.join(stray[:4])} ...)")


def make_metadata(cfg: dict, metrics: dict | None = None, training: dict | None = None) -> ModelMetadata:
    from engines.networks.backbones import describe as describe_backbone

    return common.p_fake_metadata(
        cfg["name"], cfg["input_size"], cfg["margin"],
        f"{describe_backbone(cfg['backbone'])}{' on colours + SRM high-pass residuals' if cfg.get('stem') == 'srm' else ''} -> 1 logit "
        "-> sigmoid (engines.networks.detector.FrameDetector)", training, metrics)


def _split_by_source(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    if fraction <= 0 or len(records) < 4:
        return records, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    n_val = max(1, int(round(fraction * len(records))))
    val_ids = set(order[:n_val].tolist())
    return [r for i, r in enumerate(records) if i not in val_ids], [r for i, r in enumerate(records) if i in val_ids]


def _collate(batch):
    crops = np.stack([b[0] for b in batch])
    labels = np.array([b[1] for b in batch], np.float32)
    if len(batch[0]) > 2:  # blend maps
        return crops, labels, np.stack([b[2] for b in batch])
    return crops, labels


def _score_grid(crops: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """HWC RGB uint8 grid of crops with 'label score' written on each, for TensorBoard."""
    import cv2

    tiles = []
    for crop, s, y in zip(crops, scores, labels):
        t = np.ascontiguousarray(crop.copy())
        colour = (0, 0, 255) if s >= 0.5 else (0, 200, 0)
        cv2.putText(t, f"{'F' if y else 'R'} {s:.2f}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
        tiles.append(t)
    while len(tiles) % 8:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + 8], 1) for i in range(0, len(tiles), 8)]
    return np.concatenate(rows, 0)[..., ::-1].copy()


def evaluate_dataset(model, dataset, metadata, batch_size: int = 64):
    import torch

    model.eval()
    device = next(model.parameters()).device
    scores, labels, crops = [], [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            x, y = _collate(batch)[:2]
            scores.append(model(to_tensor(x, metadata).to(device)).cpu().numpy())
            labels.append(y)
            if not crops:
                crops = list(x[:8]) + list(x[-8:])
    model.train()
    return np.concatenate(scores), np.concatenate(labels), np.asarray(crops)


# settings a resumed run keeps from its config.json whatever the command line says: they fix
# the data, the network and the recipe the checkpoint was trained with
RESUME_KEEPS = ("backbone", "stem", "input_size", "margin", "drop_rate", "seed", "data", "real", "fake", "pack", "exclude", "sbi",
                "sbi_landmarks", "sbi_curriculum", "sbi_inside", "swap_blend", "recon_fakes", "recon_share", "recon_paste", "warp_fakes", "smooth_augment", "webcam_augment", "blend_map", "ema",
                "sam")


def _run_config(config: dict, run_dir: Path, resume: bool) -> dict:
    """The run's settings: the defaults, the caller's, a resumed run's own (RESUME_KEEPS), and the
    landmark model and backbone resolved, so config.json records what the run used."""
    from engines.networks.backbones import choose as choose_backbone

    cfg = dict(DEFAULTS)
    cfg.update({k: v for k, v in config.items() if v is not None or k not in DEFAULTS})
    if resume and (run_dir / "config.json").is_file():
        saved = json.loads((run_dir / "config.json").read_text())
        for key in RESUME_KEEPS:
            if key in saved:
                cfg[key] = saved[key]
    cfg["pack"] = [cfg["pack"]] if isinstance(cfg["pack"], str) else list(cfg["pack"] or ())
    cfg["sbi_landmarks"] = landmark_model_for(cfg["pack"], cfg["sbi_landmarks"])
    cfg["backbone"] = choose_backbone(cfg["backbone"])
    recon = cfg["recon_fakes"]
    cfg["recon_fakes"] = [recon] if isinstance(recon, str) else list(recon or ())  # one path in configs written before
    blend_map_weight = float(cfg["blend_map"] or 0.0)
    if blend_map_weight < 0:
        raise ValueError(f"--blend-map {cfg['blend_map']}: the weight must be 0 (off) or positive")
    if not 0.0 <= float(cfg["swap_blend"] or 0.0) <= 1.0:
        raise ValueError(f"--swap-blend {cfg['swap_blend']}: a share, from 0 to 1")
    if cfg["swap_blend"] and not cfg["sbi"]:
        raise ValueError("--swap-blend replaces some self-blends: drop --no-sbi")
    if cfg["recon_paste"] and not cfg["recon_share"]:
        raise ValueError("--recon-paste pastes the redrawn faces of --recon-share: give that share (and --recon-fakes)")
    if cfg["warp_fakes"] and not cfg["sbi"]:
        raise ValueError("--warp-fakes replaces some self-blends: drop --no-sbi")
    if blend_map_weight and not cfg["sbi"]:
        raise ValueError("--blend-map needs self-blending (its maps come from the blends): drop --no-sbi")
    return cfg


def _reconstructor(cfg: dict):
    """The reconstruction autoencoder(s) of --recon-fakes (None without): with several, each redrawing
    is made by one of them at random. --recon-share needs at least one."""
    paths = cfg["recon_fakes"]
    if not paths:
        if cfg["recon_share"]:
            raise ValueError("--recon-share needs --recon-fakes AE.pt (dfstream train recon)")
        return None
    from train.recon import AnyReconstructor

    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--recon-fakes: no such file: {path}")
    return AnyReconstructor(paths)


def _datasets(cfg: dict, run: common.RunDir, bar):
    """(face records, training cache, training set, validation set or None): the media's faces, found
    and cached once, split by source file; the split is written to the run's faces.json."""
    exclude = tuple(cfg["exclude"])
    items = training_media(cfg["data"], cfg["real"], cfg["fake"], exclude)
    cache_dir = Path(cfg["cache_dir"]) if cfg["cache_dir"] else common.cache_root() / "faces"
    packed = unpack_all(cfg["pack"], cache_dir, exclude)
    labels = {i.label for i in items} | {r["label"] for r in packed}
    if not items and not packed:
        raise ValueError("no training media: give --data (real/ and fake/ folders or a list file), --real, --fake or --pack")
    if not cfg["sbi"] and 1 not in labels:
        raise ValueError("no fake media and --no-sbi: nothing to learn 'fake' from")
    if 0 not in labels:
        raise ValueError("no real media: self-blending and the 'real' class both need real faces")

    records = packed + cache_faces(items, cache_dir, cfg["every_n_frames"], cfg["max_frames"], cfg["max_faces"],
                                   cfg["face_detector"], progress=bar)
    if cfg["sbi"] and cfg["sbi_landmarks"]:  # a pack brings its own
        records = cache_dense_landmarks(records, cfg["sbi_landmarks"], progress=bar)
    train_recs, val_recs = _split_by_source(records, float(cfg["val_fraction"]), int(cfg["seed"]))
    # our own fakes only teach; validation stays on the media the user gave
    train_recs += [cache_aligned_fakes(folder, cache_dir, float(cfg["extra_fakes_margin"])) for folder in cfg["extra_fakes"]]
    (run.path / "faces.json").write_text(json.dumps({"train": train_recs, "val": val_recs}, indent=1))
    train_cache = load_cached(train_recs)
    if len(train_cache["labels"]) == 0:
        raise ValueError("no faces found in the training media")
    size = (int(cfg["input_size"]), int(cfg["input_size"]))
    blend_map = float(cfg["blend_map"] or 0.0) > 0
    train_set = FaceDataset(train_cache, size, float(cfg["margin"]), sbi=bool(cfg["sbi"]), train=True, seed=int(cfg["seed"]),
                            pairs=bool(cfg["sbi_pairs"]), inside=bool(cfg["sbi_inside"]),
                            smooth=bool(cfg["smooth_augment"]), webcam=bool(cfg["webcam_augment"]), blend_map=blend_map,
                            swap_share=float(cfg["swap_blend"] or 0.0),
                            reconstruct=_reconstructor(cfg), recon_share=float(cfg["recon_share"] or 0.0),
                            warp_share=float(cfg["warp_fakes"] or 0.0), recon_paste=bool(cfg["recon_paste"]))
    val_set = None
    if val_recs:
        val_cache = load_cached(val_recs)
        if len(val_cache["labels"]):
            val_set = FaceDataset(val_cache, size, float(cfg["margin"]), sbi=bool(cfg["sbi"]), train=False, seed=int(cfg["seed"]),
                                  inside=bool(cfg["sbi_inside"]), swap_share=float(cfg["swap_blend"] or 0.0),
                                  warp_share=float(cfg["warp_fakes"] or 0.0))
            if len(val_set) > cfg["val_max"]:
                keep = np.random.default_rng(cfg["seed"]).choice(len(val_set), int(cfg["val_max"]), replace=False)
                val_set.index = [val_set.index[i] for i in sorted(keep)]
    log.info("%d training samples from %d faces, %d validation samples", len(train_set), len(train_cache["labels"]), len(val_set) if val_set else 0)
    return records, train_cache, train_set, val_set


def _new_detector(cfg: dict):
    """(model, architecture) of a fresh detector; its classifier starts at P(fake) = 0.5 for every face."""
    import torch

    from engines.networks import build_model

    architecture = {"family": "detector", "backbone": cfg["backbone"], "pretrained": bool(cfg["pretrained"]),
                    "drop_rate": float(cfg["drop_rate"]), "stem": cfg["stem"], "blend_map": float(cfg["blend_map"] or 0.0) > 0}
    model = build_model(architecture)
    architecture["pretrained"] = False  # the weights are in the checkpoint from now on
    head = model.backbone.get_classifier() if hasattr(model.backbone, "get_classifier") else None
    if isinstance(head, torch.nn.Linear):  # loss ln 2 at the start, no early swings
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return model, architecture


def _start_weights(cfg: dict, run: common.RunDir, resume: bool, model, optimizer, scheduler, ema) -> tuple[int, int]:
    """(step, epoch) the run starts at: a resumed run's last checkpoint (weights, optimiser, schedule,
    moving average, RNG), or --init-from's weights at step 0, or the fresh model at step 0."""
    last = run.latest_checkpoint() if resume else None
    if last is not None:
        step, epoch = common.resume_from(common.load_checkpoint(last), model, optimizer, scheduler,
                                         extra_state={"ema": ema} if ema is not None else None)
        log.info("resumed from %s at step %d", last, step)
        return step, epoch
    if cfg["init_from"]:
        # warm start: weights only; the optimiser, the schedule (warm-up + cosine) and the step count start afresh
        init = common.load_checkpoint(cfg["init_from"])
        saved_arch = init.get("architecture") or {}
        if saved_arch.get("backbone", cfg["backbone"]) != cfg["backbone"]:
            raise ValueError(f"--init-from {cfg['init_from']} is a {saved_arch.get('backbone')} checkpoint, not {cfg['backbone']}")
        if saved_arch.get("stem", "rgb") != cfg["stem"]:
            raise ValueError(f"--init-from {cfg['init_from']} has the {saved_arch.get('stem', 'rgb')} stem, not {cfg['stem']}")
        _load_weights(model, init["state_dict"], f"--init-from {cfg['init_from']}")
        if ema is not None:
            _load_weights(ema.module, init["state_dict"], f"--init-from {cfg['init_from']}")
        log.info("initialised from %s (its step %s); fresh optimiser and schedule", cfg["init_from"], init.get("step"))
    return 0, 0


def _training_info(cfg: dict, run: common.RunDir, records: list[dict], train_cache: dict) -> dict:
    """How the model was trained, for its metadata."""
    info = {
        "command": run.config.get("command", ""),
        "data": sorted({r["path"] for r in records}),
        "faces": int(len(train_cache["labels"])),
        "sbi": bool(cfg["sbi"]),
        "sbi_landmarks": cfg["sbi_landmarks"] or "none (5-point polygon)",
        "sbi_pairs": bool(cfg["sbi"] and cfg["sbi_pairs"]),
        "sbi_curriculum_steps": int(cfg["sbi_curriculum"]) if cfg["sbi"] else 0,
        "sbi_inside": bool(cfg["sbi"] and cfg["sbi_inside"]),
        "swap_blend": float(cfg["swap_blend"] or 0.0) if cfg["sbi"] else 0.0,
        "smooth_augment": bool(cfg["smooth_augment"]),
        "webcam_augment": bool(cfg["webcam_augment"]),
        "recon_fakes": cfg["recon_fakes"],
        "recon_share": float(cfg["recon_share"] or 0.0) if cfg["sbi"] else 0.0,
        "recon_paste": bool(cfg["recon_share"] and cfg["recon_paste"]),
        "warp_fakes": float(cfg["warp_fakes"] or 0.0) if cfg["sbi"] else 0.0,
        "blend_map": float(cfg["blend_map"] or 0.0),
        "seed": int(cfg["seed"]),
        "backbone": cfg["backbone"],
        "stem": cfg["stem"],
        "pretrained": bool(cfg["pretrained"]),
        "ema": cfg["ema"],
        "sam": cfg["sam"],
    }
    if cfg["init_from"]:
        info["init_from"] = str(cfg["init_from"])
    return info


def _validate(model, ema, val_set, metadata, writer, step: int) -> tuple[dict, dict]:
    """Validation figures of the weights (and of their moving average), logged to TensorBoard:
    the ``extra`` of the checkpoints written next."""
    from train.metrics import compute_metrics

    s, yv, sample = evaluate_dataset(model, val_set, metadata)
    m = compute_metrics(yv, s)
    for key in ("roc_auc", "log_loss", "accuracy"):
        if m.get(key) is not None:
            writer.add_scalar(f"val/{key}", m[key], step)
    writer.add_image("val/samples", _score_grid(sample, np.concatenate([s[:8], s[-8:]]), np.concatenate([yv[:8], yv[-8:]])), step, dataformats="HWC")
    log.info("step %d val auc %s loss %s", step, m.get("roc_auc"), m.get("log_loss"))
    ema_extra = {}
    if ema is not None:
        s, yv, _ = evaluate_dataset(ema.module, val_set, metadata)
        ema_extra = {"val": compute_metrics(yv, s)}
        for key in ("roc_auc", "log_loss"):
            if ema_extra["val"].get(key) is not None:
                writer.add_scalar(f"val_ema/{key}", ema_extra["val"][key], step)
        log.info("step %d val auc of the averaged weights %s", step, ema_extra["val"].get("roc_auc"))
    return {"val": m}, ema_extra


def _train_step(model, optimizer, scheduler, x, y, target, blend_map_weight: float, sharpness_aware: bool):
    """One optimiser step on a batch (crops ``x``, labels ``y``, blend maps ``target`` or None);
    (loss, its classification part, the logits) before the step."""
    from torch.nn import functional as F

    def objective():
        """(loss, its classification part, the logits) of this batch at the current weights."""
        if target is None:
            logits = model.logits(x)
            loss = F.binary_cross_entropy_with_logits(logits, y)
            return loss, loss, logits
        logits, map_logits = model.logits_and_map(x)
        label_loss = F.binary_cross_entropy_with_logits(logits, y)
        return label_loss + blend_map_weight * _blend_map_loss(map_logits, target), label_loss, logits

    loss, label_loss, logits = objective()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if sharpness_aware:
        optimizer.step(lambda: _uphill_pass(model, objective))
    else:
        optimizer.step()
    scheduler.step()
    return loss, label_loss, logits


def train(config: dict, run_dir: str | Path, resume: bool = False, progress: bool | None = None) -> Path:
    """Train (or resume) a frame detector; returns the path of the last checkpoint."""
    import torch

    from train.sbi import curriculum_strength

    cfg = _run_config(config, Path(run_dir), resume)
    device = common.training_device(cfg["device"])  # before any folder or face cache: a GPU asked for must be there
    blend_map_weight = float(cfg["blend_map"] or 0.0)
    run = common.RunDir.create(run_dir, cfg, resume=resume)
    common.set_threads(cfg["threads"])
    common.seed_everything(int(cfg["seed"]))

    def bar(it, desc=""):
        return common.progress(it, desc=desc, disable=None if progress is None else not progress)

    records, train_cache, train_set, val_set = _datasets(cfg, run, bar)
    model, architecture = _new_detector(cfg)
    model.to(device)  # before the optimiser and the moving average take its parameters
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick its fastest kernels once
    log.info("training on %s", common.device_name(device))
    metadata = make_metadata(cfg)
    optimizer = _optimizer(model, cfg)
    sharpness_aware = cfg.get("sam") is not None
    total = int(cfg["steps"])
    warmup = min(int(cfg["warmup"]), max(1, total // 10))

    clock = {"start": time.time()}
    limit_s = 60 * float(cfg["time_limit"]) if cfg["time_limit"] else None

    def lr_lambda(step):
        """Linear warm-up, then cosine decay to 2% -- over the steps, or over --time-limit if that comes first."""
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total - warmup)
        if limit_s:
            done = max(done, (time.time() - clock["start"]) / limit_s)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done))) * 0.98 + 0.02

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    ema = _weight_average(model, cfg["ema"])
    step, epoch = _start_weights(cfg, run, resume, model, optimizer, scheduler, ema)
    start_saved = bool(resume and run.latest_checkpoint() is not None)
    writer = tensorboard_writer(run.path, step)
    training_info = dict(_training_info(cfg, run, records, train_cache), device=common.device_name(device))
    state = {"epoch": epoch, "batches": None}

    def save(path, at: int, extra=None):
        info = dict(training_info, steps=at, epoch=state["epoch"])
        return common.save_checkpoint(path, model, architecture, make_metadata(cfg, training=info), optimizer, scheduler,
                                      step=at, epoch=state["epoch"], extra=extra,
                                      extra_state={"ema": ema.state_dict()} if ema is not None else None)

    def save_average(at: int, extra=None):
        """checkpoints/ema.pt: the averaged weights as a checkpoint of their own, for export and eval."""
        info = dict(training_info, steps=at, epoch=state["epoch"], weights=f"exponential moving average, decay {cfg['ema']}")
        return common.save_checkpoint(run.checkpoint_path(EMA_CHECKPOINT), ema.module, architecture,
                                      make_metadata(cfg, training=info), step=at, epoch=state["epoch"], extra=extra)

    def checkpoint(at: int, final: bool) -> None:
        """Validate, then last.pt (and ema.pt); every --checkpoint-every steps a stepNNNNNNNN.pt too."""
        extra, ema_extra = _validate(model, ema, val_set, metadata, writer, at) if val_set is not None else ({}, {})
        save(run.checkpoint_path(), at, extra)
        if ema is not None:
            save_average(at, ema_extra)
        if at % int(cfg["checkpoint_every"]) == 0:
            save(run.checkpoint_path(at), at, extra)

    import torch.utils.data as tud

    def next_batch(done: int):
        """The next batch; each epoch's loader is made when its first batch is wanted (its crops, blends and
        curriculum strength fixed then)."""
        while True:
            if state["batches"] is None:
                train_set.epoch = state["epoch"]  # before the workers start: they draw this epoch's crops and blends
                train_set.blend_strength = curriculum_strength(done, int(cfg["sbi_curriculum"]))
                batches = train_set.batches(int(cfg["batch_size"]), np.random.default_rng([int(cfg["seed"]), state["epoch"]]))
                state["batches"] = iter(tud.DataLoader(train_set, batch_sampler=batches, num_workers=int(cfg["workers"]),
                                                       collate_fn=_collate, persistent_workers=False))
            try:
                return next(state["batches"])
            except StopIteration:
                state["batches"] = None
                state["epoch"] += 1

    def one_step(done: int) -> dict:
        crops, labels, *maps = next_batch(done)
        x = to_tensor(crops, metadata).to(device)
        y = torch.from_numpy(labels).to(device)
        target = torch.from_numpy(maps[0]).to(device) if maps else None
        loss, label_loss, logits = _train_step(model, optimizer, scheduler, x, y, target, blend_map_weight, sharpness_aware)
        acc = float(((logits.detach() > 0).float() == y).float().mean())
        return {"loss": float(label_loss.detach()), "acc": acc, "total": float(loss.detach())}

    def scalars(at: int, window: list[dict]) -> dict:
        """The means over the steps since the last point, and the learning rate now."""
        l, a, total_loss = (float(np.mean([v[k] for v in window])) for k in ("loss", "acc", "total"))
        log.info("step %d loss %.4f acc %.3f", at, l, a)
        out = {"train/loss": l}
        if blend_map_weight:
            out["train/blend_map_loss"] = (total_loss - l) / blend_map_weight
        out.update({"train/accuracy": a, "train/lr": scheduler.get_last_lr()[0]})
        return out

    started = clock["start"] = time.time()
    model.train()
    loop = TrainingLoop(
        LoopConfig(total=total, start=step, started=started, time_limit_s=limit_s, log_every=int(cfg["log_every"]),
                   checkpoint_every=int(cfg["checkpoint_every"]), saved_at_start=start_saved, desc="train detector",
                   unit="it", progress=progress),
        step=one_step, save=checkpoint, writer=writer, scalars=scalars,
        postfix=lambda v: {"loss": f"{v['loss']:.3f}", "acc": f"{v['acc']:.2f}"}, ema=ema, model=model)
    result = loop.run()
    state["batches"] = None  # the last epoch's loader workers go now
    if result.out_of_time:
        log.warning("time limit reached at step %d of %d", result.step, total)
    writer.close()
    return run.checkpoint_path()
