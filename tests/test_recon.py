"""Reconstruction fakes: an autoencoder that redraws real faces whole, and the detector's use of them."""
import numpy as np
import pytest


def _wide_crops(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal(120, 30, (n, 28, 28, 3)), 0, 255).astype(np.uint8)
    import cv2

    return np.stack([cv2.resize(b, (224, 224), interpolation=cv2.INTER_CUBIC) for b in base])


def test_the_autoencoder_learns_to_redraw_faces_and_its_redrawings_keep_the_crop_size(tmp_path):
    from train.recon import Reconstructor, train_recon

    crops = _wide_crops()
    short = train_recon(crops, tmp_path / "a.pt", steps=2, batch_size=4, width=8, patch=64)
    longer = train_recon(crops, tmp_path / "b.pt", steps=40, batch_size=4, width=8, patch=64)
    assert longer["final_loss"] < short["final_loss"]  # it learns to redraw, not to paint noise
    redrawn = Reconstructor(tmp_path / "b.pt")(crops[0])
    assert redrawn.shape == crops[0].shape and redrawn.dtype == np.uint8
    assert not np.array_equal(redrawn, crops[0])
    with pytest.raises(ValueError, match="224"):
        Reconstructor(tmp_path / "b.pt")(crops[0][:100, :100])
    with pytest.raises(ValueError, match="multiple of 8"):
        train_recon(crops, tmp_path / "c.pt", steps=1, batch_size=4, width=8, patch=60)


def test_the_edge_term_penalises_a_blurred_redrawing_more_than_pixel_l1_alone():
    import cv2
    import torch

    from train.recon import _to_tensor, reconstruction_loss

    sharp = _wide_crops(2)
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 2.0) for c in sharp])
    x, y = _to_tensor(sharp), _to_tensor(blurred)
    pixel_only = reconstruction_loss(y, x, edge_weight=0.0)
    with_edges = reconstruction_loss(y, x, edge_weight=1.0)
    assert with_edges > pixel_only > 0
    assert reconstruction_loss(x, x) == torch.tensor(0.0)


def test_a_colour_matched_redrawing_takes_the_input_colours(tmp_path):
    import cv2

    from train.recon import Reconstructor, train_recon

    crops = _wide_crops()
    train_recon(crops, tmp_path / "ae.pt", steps=3, batch_size=4, width=8, patch=64)
    warm = crops[0].copy()
    warm[..., 2] = np.clip(warm[..., 2].astype(int) + 60, 0, 255)  # a reddish crop the AE never saw
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(float).mean(0)  # noqa: E731
    matched = Reconstructor(tmp_path / "ae.pt")(warm)
    raw = Reconstructor(tmp_path / "ae.pt", colour_match=False)(warm)
    assert np.abs(lab(matched) - lab(warm)).max() < 3
    assert np.abs(lab(raw) - lab(warm)).max() > np.abs(lab(matched) - lab(warm)).max()


def test_the_dataset_makes_its_recon_share_of_fakes_with_the_autoencoder():
    from train.datasets import FaceDataset

    crops = _wide_crops(12)
    landmarks = np.tile(np.array([[80, 90], [144, 90], [112, 120], [88, 150], [136, 150]], np.float32), (12, 1, 1))
    cached = {"crops": crops, "landmarks": landmarks, "labels": np.zeros(12, np.int64),
              "source": np.arange(12), "frames": np.zeros(12, np.int64)}
    calls = []

    def redraw(wide, rng):
        calls.append(wide.shape)
        return np.full_like(wide, 7)  # a flat redrawing: easy to tell in the model crop

    data = FaceDataset(cached, (64, 64), 1.4, sbi=True, train=False, reconstruct=redraw, recon_share=1.0)
    fakes = [data[i] for i, (_, kind) in enumerate(data.index) if kind == 2]
    assert len(calls) == 12 and all(label == 1 for _, label in fakes)
    assert all(np.all(crop == 7) for crop, _ in fakes)
    plain = FaceDataset(cached, (64, 64), 1.4, sbi=True, train=False, reconstruct=redraw, recon_share=0.0)
    _ = [plain[i] for i, (_, kind) in enumerate(plain.index) if kind == 2]
    assert len(calls) == 12  # no share, no redrawing


def test_a_nearest_upsampling_autoencoder_redraws_and_several_autoencoders_share_the_redrawings(tmp_path):
    from train.recon import AnyReconstructor, Reconstructor, build_autoencoder, train_recon

    crops = _wide_crops()
    train_recon(crops, tmp_path / "t.pt", steps=2, batch_size=4, width=8, patch=64)
    result = train_recon(crops, tmp_path / "n.pt", steps=2, batch_size=4, width=8, patch=64, upsample="nearest")
    assert result["upsample"] == "nearest"
    nearest = Reconstructor(tmp_path / "n.pt")
    assert any(type(m).__name__ == "Upsample" for m in nearest.model.modules())
    assert not any(type(m).__name__ == "ConvTranspose2d" for m in nearest.model.modules())
    both = AnyReconstructor([tmp_path / "t.pt", tmp_path / "n.pt"])
    rng = np.random.default_rng(0)
    drawn = [both(crops[0], rng) for _ in range(12)]
    by_member = [m(crops[0]) for m in both.members]
    assert {next(i for i, m in enumerate(by_member) if np.array_equal(d, m)) for d in drawn} == {0, 1}
    with pytest.raises(ValueError, match="upsample"):
        build_autoencoder(8, "bilinear")


def test_a_pasted_redrawing_replaces_the_inner_face_and_leaves_the_frame_real():
    from train.datasets import FaceDataset

    crops = _wide_crops(6)
    landmarks = np.tile(np.array([[80, 90], [144, 90], [112, 120], [88, 150], [136, 150]], np.float32), (6, 1, 1))
    cached = {"crops": crops, "landmarks": landmarks, "labels": np.zeros(6, np.int64),
              "source": np.arange(6), "frames": np.zeros(6, np.int64)}
    data = FaceDataset(cached, (224, 224), 2.0, sbi=True, train=False, reconstruct=lambda wide, rng: np.full_like(wide, 7),
                       recon_share=1.0, recon_paste=True)
    for i, (face, kind) in enumerate(data.index):
        if kind != 2:
            continue
        crop, label = data[i]
        real = data[[j for j, (f, k) in enumerate(data.index) if f == face and k == 0][0]][0]
        change = np.abs(crop.astype(int) - real.astype(int)).max(axis=2)
        assert label == 1 and change[100:130, 100:130].mean() > 10  # the inner face is the generator's
        assert np.mean(change == 0) > 0.3  # around it, the real frame (a whole redrawing leaves none of it)


def test_training_on_a_pack_with_pasted_redrawings_needs_their_share(tmp_path):
    from train.detector import _run_config

    with pytest.raises(ValueError, match="--recon-share"):
        _run_config({"recon_paste": True, "real": ["x"]}, tmp_path, resume=False)
