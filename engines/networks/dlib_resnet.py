"""dlib's face-recognition ResNet, read from dlib's own file and rebuilt in torch.

``dlib_face_recognition_resnet_model_v1.dat`` (CC0) is the ``anet_type`` of dlib's
``examples/dnn_face_recognition_ex.cpp``: a 29-convolution ResNet trained on about 3 M
faces of 7485 people to map a 150 x 150 face chip to a 128-d descriptor.  Its layers
start a deepfake detector's training (:mod:`engines.networks.backbones`), so this module
needs neither dlib nor a C++ toolchain: :func:`read_dat` parses dlib's serialization
with numpy, :class:`DlibFaceResNet` is the same network in plain torch modules (ONNX
exportable).  Descriptors match real dlib 20.0.1's ``compute_face_descriptor`` within
3e-7 (tests/test_dlib_resnet.py).

The network, as dlib declares it (levels apply from ``alevel4`` to ``alevel0``)::

    ares<N,S>      = relu<add_prev1<affine<con<N,3,3,1,1,relu<affine<con<N,3,3,1,1,tag1<S>>>>>>>>
    ares_down<N,S> = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<affine<con<N,3,3,1,1,
                         relu<affine<con<N,3,3,2,2,tag1<S>>>>>>>>>>>
    alevel0 = ares_down<256>        alevel1 = ares<256,ares<256,ares_down<256>>>
    alevel2 = 2 x ares<128> on ares_down<128>   alevel3 = 3 x ares<64> on ares_down<64>
    alevel4 = 3 x ares<32>
    anet = loss_metric<fc_no_bias<128,avg_pool_everything<alevel0<...<alevel4<
               max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>>>>>>

Things about dlib that a straight ResNet port gets wrong:

* Padding is a per-layer setting stored in the file; dlib's default pads only
  stride-1 layers (``_stride!=1 ? 0 : size/2``), so the 7x7 stem, the strided 3x3s
  and all the pools are unpadded.  We use the padding the file says.
* ``add_prev`` adds tensors of different shapes by zero-padding the smaller one at
  the end of each axis (channels, bottom rows, right columns).  At 150 px the two
  branches of the 64- and 128-channel downsampling blocks differ in channels only,
  but from the 256-channel ones on they differ in size too: the strided conv makes
  3x3 of 8x8 while the 2x2 average pool makes 4x4, so the conv branch only covers
  the top-left of the sum.
* ``affine`` is a frozen batch norm: a per-channel scale and shift, nothing learnt
  from batch statistics.  Here it is :class:`ChannelAffine` (trainable parameters,
  initialised from the file).
* The input is RGB, ``(pixel - mean) / 256`` with per-channel means stored in the
  file (about 122.8, 117.0, 104.3), not the usual ImageNet mean/std.
* The 128-d output is ``loss_metric``'s raw output, not L2-normalised: dlib compares
  faces by the Euclidean distance of these vectors (same person below 0.6).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Where each level is cut, in the order the input meets them: a level's first block
# halves the resolution (except level4's), the rest keep it.
# (name, output channels, residual blocks, first block downsamples)
LEVELS: tuple[tuple[str, int, int, bool], ...] = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
UP_TO = ("stem", "level4", "level3", "level2", "level1", "level0", "descriptor")
STEM_CHANNELS = 32
DESCRIPTOR_SIZE = 128
INPUT_SCALE = 1.0 / 256.0  # dlib's input_rgb_image divides by 256, not 255

# dlib's float_details marks non-finite floats with these exponents.
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002


# --------------------------------------------------------------------------------------
# What the file holds


@dataclass(frozen=True)
class ConvWeights:
    weight: np.ndarray  # (out, in, kh, kw) float32, cross-correlation as torch's Conv2d
    bias: np.ndarray  # (out,) float32
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x), symmetric


@dataclass(frozen=True)
class AffineWeights:
    gamma: np.ndarray  # (channels,) float32: y = gamma * x + beta, per channel
    beta: np.ndarray


@dataclass(frozen=True)
class PoolSpec:
    kernel: tuple[int, int]  # (0, 0): the whole feature map (avg_pool_everything)
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class ResBlockWeights:
    conv1: ConvWeights
    affine1: AffineWeights
    conv2: ConvWeights
    affine2: AffineWeights
    shortcut_pool: PoolSpec | None  # the avg_pool on the skip path of a downsampling block

    @property
    def downsamples(self) -> bool:
        return self.shortcut_pool is not None


@dataclass(frozen=True)
class DlibFaceNetWeights:
    """Everything :class:`DlibFaceResNet` needs, as parsed from one ``.dat`` file."""

    path: Path
    rgb_mean: tuple[float, float, float]  # subtracted from 0..255 R, G, B before the /256
    input_size: tuple[int, int]  # (rows, cols) the network was trained at
    stem_conv: ConvWeights
    stem_affine: AffineWeights
    stem_pool: PoolSpec
    levels: tuple[tuple[str, tuple[ResBlockWeights, ...]], ...]  # in LEVELS order
    fc_weight: np.ndarray  # (128, 256) float32, torch Linear layout (dlib stores it transposed)
    margin: float  # loss_metric's training margin and same-person distance (informative)
    distance_threshold: float

    def level(self, name: str) -> tuple[ResBlockWeights, ...]:
        return dict(self.levels)[name]


# --------------------------------------------------------------------------------------
# dlib's serialization (dlib/serialize.h, dlib/dnn/{core,layers,input,loss}.h, cuda/tensor.h)


class _Reader:
    """A cursor over the file's bytes; every failure names the file, in one line."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, why: str) -> ValueError:
        return ValueError(f"{self.path}: not a readable dlib face-recognition network file: {why}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated (needs {self.pos + n} bytes, has {len(self.data)})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        # dlib's compact integers: a control byte (bits 0-3: how many little-endian
        # bytes follow, bit 7: negative), then the magnitude.  Zero is one 0x00 byte.
        control = self.take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        # float_details: mantissa (int64) and exponent (int16), value = mantissa * 2**exponent.
        # Files from before 2016 wrote ASCII decimals, whose first byte has bits in 0x70.
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa, exponent = self.int(), self.int()
        if exponent == _EXP_INF:
            return math.inf
        if exponent == _EXP_NINF:
            return -math.inf
        if exponent == _EXP_NAN:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        value = self.take(1)
        if value not in (b"0", b"1"):
            raise self.fail(f"bad boolean {value!r} at byte {self.pos - 1}")
        return value == b"1"

    def str(self) -> str:
        length = self.int()
        if not 0 <= length <= 256:  # every name dlib writes is short; anything else is not dlib
            raise self.fail(f"implausible string length {length} at byte {self.pos}")
        raw = self.take(length)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-text name {raw[:20]!r} at byte {self.pos - length}") from None

    def tag(self, *expected: str) -> str:
        start = self.pos
        found = self.str()
        if found not in expected:
            raise self.fail(f"expected {' or '.join(map(repr, expected))} at byte {start}, found {found!r}")
        return found

    def version(self, what: str, allowed: tuple[int, ...]) -> int:
        start = self.pos
        found = self.int()
        if found not in allowed:
            raise self.fail(f"unexpected {what} version {found} at byte {start} (expected {allowed})")
        return found

    def tensor(self) -> np.ndarray:
        # resizable_tensor v2: version, 4 dims (num_samples, k, nr, nc), then raw
        # little-endian float32 (dlib's own float encoding is not used for tensor data).
        self.version("tensor", (2,))
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape} at byte {self.pos}")
        count = math.prod(shape)
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        # alias_tensor: a view's shape (its data lives in the layer's params tensor)
        self.version("alias_tensor", (1,))
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


# The network as a sequence, input first.  "add" entries are dlib add_layers and carry
# the layer we expect; tags and skips are bare wrappers (their version is all they write).


@dataclass(frozen=True)
class _Add:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc
    filters: int = 0  # con: output channels; fc: outputs
    kernel: int = 0  # con / pools: window size (0: whole map)
    stride: int = 1


@dataclass(frozen=True)
class _Wrapper:
    kind: str  # tag or skip


def _anet_sequence() -> list[_Add | _Wrapper]:
    seq: list[_Add | _Wrapper] = [_Add("con", STEM_CHANNELS, 7, 2), _Add("affine"), _Add("relu"), _Add("max_pool", 0, 3, 2)]
    for _, channels, blocks, first_down in LEVELS:
        for index in range(blocks):
            down = first_down and index == 0
            seq += [_Wrapper("tag"),  # tag1: the block's input
                    _Add("con", channels, 3, 2 if down else 1), _Add("affine"), _Add("relu"),
                    _Add("con", channels, 3, 1), _Add("affine")]
            if down:  # tag2 on the conv branch, skip1 back to the input, pool it
                seq += [_Wrapper("tag"), _Wrapper("skip"), _Add("avg_pool", 0, 2, 2)]
            seq += [_Add("add_prev"), _Add("relu")]
    seq += [_Add("avg_pool", 0, 0, 1), _Add("fc", DESCRIPTOR_SIZE)]
    return seq


def _read_layer(r: _Reader, expect: _Add) -> dict:
    """One add_layer's details (the layer object itself)."""
    if expect.kind == "con":
        version = r.tag("con_4", "con_5", "con_6")
        params = r.tensor().reshape(-1)
        filters = r.int()
        kernel = (r.int(), r.int())
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        weight_shape, bias_shape = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        use_bias = r.bool() if version in ("con_5", "con_6") else True
        fused_relu = r.bool() if version == "con_6" else False
        if filters != expect.filters or kernel != (expect.kernel,) * 2 or stride != (expect.stride,) * 2:
            raise r.fail(f"convolution {filters} x {kernel} stride {stride} where this network has "
                         f"{expect.filters} x {(expect.kernel,) * 2} stride {(expect.stride,) * 2}")
        if fused_relu or not use_bias:
            raise r.fail("convolution with a fused ReLU or without bias (a dlib fuse_layers'd net) is not supported")
        n_weight = math.prod(weight_shape)
        if weight_shape[0] != filters or weight_shape[2:] != kernel or params.size != n_weight + filters \
                or math.prod(bias_shape) != filters:
            raise r.fail(f"convolution parameters of {params.size} values do not fit filters {weight_shape}")
        return {"conv": ConvWeights(weight=params[:n_weight].reshape(weight_shape).copy(),
                                    bias=params[n_weight:].copy(), stride=stride, padding=padding)}
    if expect.kind == "affine":
        version = r.tag("affine_", "affine_2")
        params = r.tensor().reshape(-1)
        gamma_shape, beta_shape = r.alias(), r.alias()
        mode = r.int()
        disabled = r.bool() if version == "affine_2" else False
        channels = math.prod(gamma_shape)
        if mode != 0 or params.size != 2 * channels or math.prod(beta_shape) != channels:
            raise r.fail(f"affine layer (mode {mode}, {params.size} values) is not a per-channel one")
        if disabled:  # folded into the previous conv by dlib's fuse_layers: an identity here
            return {"affine": AffineWeights(np.ones(channels, np.float32), np.zeros(channels, np.float32))}
        return {"affine": AffineWeights(gamma=params[:channels].copy(), beta=params[channels:].copy())}
    if expect.kind == "relu":
        if r.tag("relu_", "relu_2") == "relu_2" and r.bool():
            raise r.fail("disabled ReLU (a fuse_layers'd net) is not supported")
        return {}
    if expect.kind in ("max_pool", "avg_pool"):
        r.tag(f"{expect.kind}_2")
        kernel = (r.int(), r.int())
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        if kernel != (expect.kernel,) * 2 or stride != (expect.stride,) * 2:
            raise r.fail(f"{expect.kind} {kernel} stride {stride} where this network has "
                         f"{(expect.kernel,) * 2} stride {(expect.stride,) * 2}")
        return {"pool": PoolSpec(kernel, stride, padding)}
    if expect.kind == "add_prev":
        r.tag("add_prev_")
        return {}
    if expect.kind == "fc":
        version = r.tag("fc_2", "fc_3")
        outputs, inputs = r.int(), r.int()
        params = r.tensor().reshape(-1)
        weight_shape, _ = r.alias(), r.alias()
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        use_bias = r.bool() if version == "fc_3" else True
        # bias_mode 1 is FC_NO_BIAS; weights are stored (inputs, outputs), row-major
        if outputs != expect.filters or bias_mode != 1 or params.size != inputs * outputs \
                or math.prod(weight_shape) != inputs * outputs:
            raise r.fail(f"fc layer {inputs} -> {outputs} (bias mode {bias_mode}, use_bias {use_bias}) "
                         f"is not this network's fc_no_bias<{expect.filters}>")
        return {"fc": params.reshape(inputs, outputs).T.copy()}
    raise AssertionError(expect.kind)


def _read_trailer(r: _Reader, version: int, innermost: bool) -> None:
    """What add_layer writes after its layer: state flags and (normally empty) buffers."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if innermost:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # _sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad


def read_dat(path: str | Path) -> DlibFaceNetWeights:
    """Parse dlib's ``dlib_face_recognition_resnet_model_v1.dat``.

    dlib writes a network outside-in: the loss, then each wrapper's version from the
    output down to the input, then the input layer, then each layer's own data from the
    input up.  We walk that with the architecture known in advance, checking every
    layer name, size and stride on the way: a file that is truncated, not dlib's, or
    another dlib network raises ``ValueError`` naming the file.
    """
    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    r.version("add_loss_layer", (1,))
    if r.tag("loss_metric_", "loss_metric_2") == "loss_metric_2":
        margin, threshold = r.float(), r.float()
    else:  # loss_metric_'s defaults before it stored them
        margin, threshold = 0.1, 0.75

    sequence = _anet_sequence()
    adds = [entry for entry in sequence if isinstance(entry, _Add)]
    versions: list[int] = []
    for entry in reversed(sequence):  # outermost first
        if isinstance(entry, _Wrapper):
            r.version(f"add_{entry.kind}_layer", (1,))
        else:
            innermost = entry is adds[0]
            versions.append(r.version("add_layer", (2, 3) if innermost else (1, 2)))
    versions.reverse()

    input_tag = r.tag("input_rgb_image_sized", "input_rgb_image")
    rgb_mean = (r.float(), r.float(), r.float())
    input_size = (r.int(), r.int()) if input_tag == "input_rgb_image_sized" else (150, 150)

    layers = []
    for index, (entry, version) in enumerate(zip(adds, versions, strict=True)):
        layers.append(_read_layer(r, entry))
        _read_trailer(r, version, innermost=index == 0)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")

    # Regroup the flat layer list (conv, affine, relu, pool, ... input first) into levels.
    convs = iter(item["conv"] for item in layers if "conv" in item)
    affines = iter(item["affine"] for item in layers if "affine" in item)
    pools = iter(item["pool"] for item in layers if "pool" in item)
    stem_conv, stem_affine, stem_pool = next(convs), next(affines), next(pools)
    levels = []
    for name, _, blocks, first_down in LEVELS:
        level = []
        for index in range(blocks):
            c1, a1, c2, a2 = next(convs), next(affines), next(convs), next(affines)
            level.append(ResBlockWeights(c1, a1, c2, a2, next(pools) if first_down and index == 0 else None))
        levels.append((name, tuple(level)))
    final_pool = next(pools)
    if final_pool.kernel != (0, 0) or final_pool.padding != (0, 0):
        raise r.fail(f"final pooling {final_pool} is not avg_pool_everything")
    return DlibFaceNetWeights(path=path, rgb_mean=rgb_mean, input_size=input_size, stem_conv=stem_conv,
                              stem_affine=stem_affine, stem_pool=stem_pool, levels=tuple(levels),
                              fc_weight=layers[-1]["fc"], margin=margin, distance_threshold=threshold)


# --------------------------------------------------------------------------------------
# The network in torch


class ChannelAffine(nn.Module):
    """dlib's ``affine`` layer: y = weight[c] * x + bias[c].  A batch norm frozen into
    constants at the end of dlib's training; parameters here so a caller may fine-tune them."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each axis, the smaller tensor read as
    zero beyond its end (channels after its last, rows below, columns to the right)."""
    if a.shape[1:] == b.shape[1:]:
        return a + b
    size = [max(int(p), int(q)) for p, q in zip(a.shape[1:], b.shape[1:], strict=True)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        c, h, w = (int(s) for s in t.shape[1:])
        return F.pad(t, (0, size[2] - w, 0, size[1] - h, 0, size[0] - c))

    return grow(a) + grow(b)


def _conv(w: ConvWeights) -> nn.Conv2d:
    out_channels, in_channels, kh, kw = w.weight.shape
    conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=w.stride, padding=w.padding, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.weight))
        conv.bias.copy_(torch.from_numpy(w.bias))
    return conv


def _affine(w: AffineWeights) -> ChannelAffine:
    module = ChannelAffine(w.gamma.size)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(w.gamma))
        module.bias.copy_(torch.from_numpy(w.beta))
    return module


def _avg_pool(spec: PoolSpec) -> nn.AvgPool2d:
    # dlib averages over the part of a window inside the map: count_include_pad=False
    return nn.AvgPool2d(spec.kernel, spec.stride, spec.padding, count_include_pad=False)


class Stem(nn.Sequential):
    """con 7x7/2 (unpadded), affine, relu, max_pool 3x3/2: 150 -> 72 -> 35."""

    def __init__(self, w: DlibFaceNetWeights):
        super().__init__()
        self.conv = _conv(w.stem_conv)
        self.affine = _affine(w.stem_affine)
        self.relu = nn.ReLU()
        # dlib's max pool takes the max over the window's part inside the map, which is
        # what torch's -inf padding gives
        self.pool = nn.MaxPool2d(w.stem_pool.kernel, w.stem_pool.stride, w.stem_pool.padding)


class ResBlock(nn.Module):
    """``ares`` (identity shortcut) or ``ares_down`` (stride-2 conv branch, 2x2 average
    pooled shortcut, zero-padded to the conv branch's channels)."""

    def __init__(self, w: ResBlockWeights):
        super().__init__()
        self.conv1 = _conv(w.conv1)
        self.affine1 = _affine(w.affine1)
        self.conv2 = _conv(w.conv2)
        self.affine2 = _affine(w.affine2)
        self.shortcut: nn.Module = _avg_pool(w.shortcut_pool) if w.shortcut_pool is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        return torch.relu(add_zero_padded(self.shortcut(x), y))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet up to ``up_to``.

    Submodules ``stem``, ``level4``, ``level3``, ``level2``, ``level1``, ``level0``, ``fc``
    in the order the input meets them (dlib numbers its levels from the output end), only
    those up to ``up_to`` built, so a caller can freeze them by name.

    ``forward`` takes dlib's input: an RGB NCHW float batch already ``(pixel - rgb_mean) *
    input_scale`` (see :meth:`normalise`), nominally 150 x 150 face chips aligned like
    ``dlib.get_face_chip`` (padding 0.25; :func:`dlib_chip_landmarks`), though other sizes
    work (at least 103 px for the descriptor).  It returns the last kept level's (N, C, H, W)
    feature map, or for ``up_to="descriptor"`` the (N, 128) face descriptor: loss_metric's
    raw output, NOT L2-normalised (dlib's same-person threshold is 0.6 Euclidean on it).

    Shapes at 150 px: stem 32x35x35, level4 32x35x35, level3 64x17x17, level2 128x8x8,
    level1 256x4x4, level0 256x2x2.
    """

    def __init__(self, weights: DlibFaceNetWeights, up_to: str = "descriptor"):
        super().__init__()
        if up_to not in UP_TO:
            raise ValueError(f"up_to must be one of {', '.join(UP_TO)}, not {up_to!r}")
        self.up_to = up_to
        self.rgb_mean: tuple[float, float, float] = weights.rgb_mean
        self.input_scale: float = INPUT_SCALE
        self.input_size: tuple[int, int] = weights.input_size
        self.stem = Stem(weights)
        channels = STEM_CHANNELS
        self.level_names: tuple[str, ...] = ()
        for name, out_channels, _, _ in LEVELS:
            if UP_TO.index(up_to) < UP_TO.index(name):
                break
            self.add_module(name, nn.Sequential(*(ResBlock(block) for block in weights.level(name))))
            channels = out_channels
            self.level_names += (name,)
        if up_to == "descriptor":
            self.fc = nn.Linear(channels, DESCRIPTOR_SIZE, bias=False)
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(weights.fc_weight))
            channels = DESCRIPTOR_SIZE
        self.num_features: int = channels

    @classmethod
    def from_dat(cls, path: str | Path, up_to: str = "descriptor") -> "DlibFaceResNet":
        return cls(read_dat(path), up_to=up_to)

    def normalise(self, images_rgb_0_255: torch.Tensor) -> torch.Tensor:
        """RGB NCHW pixels in 0..255 (any dtype) -> this network's input, as dlib's input_rgb_image."""
        mean = torch.tensor(self.rgb_mean, dtype=torch.float32, device=images_rgb_0_255.device).view(1, 3, 1, 1)
        return (images_rgb_0_255.float() - mean) * self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.level_names:
            x = getattr(self, name)(x)
        if self.up_to == "descriptor":
            x = self.fc(x.mean(dim=(2, 3)))  # avg_pool_everything, then fc_no_bias
        return x


def dlib_chip_landmarks(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Where ``dlib.get_face_chip(img, shape, size, padding)`` puts a face's eye centres,
    nose tip and mouth corners (5 x 2, in engines.alignment's landmark order: image-left
    eye, image-right eye, nose, image-left mouth corner, image-right one).

    Given 68 landmarks dlib aligns them on its mean face shape (given its own 5, on that
    shape's eye corners and nose base); these are the mean shape's eye centres (points
    36-41 and 42-47), nose tip (30) and mouth corners (48, 54), so that a 5-point detector
    (YuNet, SCRFD) can cut the chips the network was trained on, near enough.
    """
    # dlib/image_transforms/interpolation.h, mean_face_shape_{x,y}, unit square, padding 0
    eye_left_x = (0.121737, 0.187122, 0.265825, 0.334606, 0.260918, 0.182743)
    eye_left_y = (0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077)
    eye_right_x = (0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335)
    eye_right_y = (0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099)
    unit = np.array([
        [np.mean(eye_left_x), np.mean(eye_left_y)],
        [np.mean(eye_right_x), np.mean(eye_right_y)],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ])
    return (unit + padding) / (1 + 2 * padding) * size
