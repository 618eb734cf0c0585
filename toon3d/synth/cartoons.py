"""The cartoon face set: seeded facesjs faces, framed like SynFace heads and rasterised with resvg.

facesjs (Apache-2.0) draws a vector cartoon face on a 400x600 canvas from a handful of
parameters. A single Node process (`tools/facesjs/faces_server.mjs`) streams the SVG of face
`i` of seed `s` (its random source is a PRNG seeded from (s, i) alone); Python reframes the SVG
onto the square that puts facesjs's fixed feature positions where `toon3d.synth.layout` puts
SynFace's, and rasterises it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from toon3d.errors import Toon3dError
from toon3d.synth import layout
from toon3d.synth.svg_render import reframe_svg, render_svg

NODE_ENV = "TOON3D_NODE"              # path of the node executable, overriding PATH
FACESJS_DIR_ENV = "TOON3D_FACESJS_DIR"  # folder holding faces_server.mjs and node_modules/
SERVER_SCRIPT = "faces_server.mjs"
MIN_NODE_MAJOR = 18
REQUEST_CHUNK = 64  # requests in flight; a chunk of request lines must fit in the pipe buffer

# Where facesjs 5 draws the parts of every face (display.js, canvas units): features are
# translated so their bounding-box centres land on these points whatever the face.
FACESJS_EYE_LEFT = (140.0, 310.0)
FACESJS_EYE_RIGHT = (260.0, 310.0)
FACESJS_MOUTH = (200.0, 440.0)
# Every head drawing spans x 50..350 and ends at y≈500 (the chin), and is scaled horizontally
# by 0.8 + 0.2·fatness about x=200; fatness averages ≈0.35 over facesjs's male/female ranges.
FACESJS_CHIN_Y = 500.0
FACESJS_HEAD_HALF_WIDTH = 150.0 * (0.8 + 0.2 * 0.35)
FACESJS_CENTER_X = 200.0


@dataclass(frozen=True)
class CartoonSettings:
    """What `make_cartoons` builds: `n` faces of `size`×`size` pixels from `seed`, on `workers` threads."""

    n: int = 5000
    size: int = 128
    seed: int = 0
    workers: int = 2  # threads rasterising and saving faces


@lru_cache(maxsize=1)
def facesjs_crop_box() -> tuple[float, float, float]:
    """The square (x0, y0, side) of the facesjs canvas that becomes the image.

    A least-squares fit of one scale and a translation mapping facesjs's eye centres, mouth,
    chin and cheek edges onto the layout's, so cartoon heads sit where SynFace heads sit.
    """
    rows, targets = [], []

    def point(p: tuple[float, float], t: tuple[float, float]) -> None:
        rows.extend([[p[0], 1.0, 0.0], [p[1], 0.0, 1.0]])
        targets.extend(t)

    point(FACESJS_EYE_LEFT, (layout.EYE_LEFT_X, layout.EYE_Y))
    point(FACESJS_EYE_RIGHT, (layout.EYE_RIGHT_X, layout.EYE_Y))
    point(FACESJS_MOUTH, (layout.FACE_CENTER_X, layout.MOUTH_Y))
    point((FACESJS_CENTER_X, FACESJS_CHIN_Y), (layout.FACE_CENTER_X, layout.CHIN_Y))
    for sign in (-1.0, 1.0):  # cheek edges constrain only x
        rows.append([FACESJS_CENTER_X + sign * FACESJS_HEAD_HALF_WIDTH, 1.0, 0.0])
        targets.append(layout.FACE_CENTER_X + sign * layout.FACE_HALF_WIDTH)
    scale, bx, by = np.linalg.lstsq(np.asarray(rows), np.asarray(targets), rcond=None)[0]
    return (float(-bx / scale), float(-by / scale), float(1.0 / scale))


def canvas_to_image(point: tuple[float, float]) -> tuple[float, float]:
    """A facesjs canvas point → its position in the image, as fractions of the image size."""
    x0, y0, side = facesjs_crop_box()
    return ((point[0] - x0) / side, (point[1] - y0) / side)


def facesjs_dir() -> Path:
    """Folder of the facesjs tool (`tools/facesjs` of the checkout, or $TOON3D_FACESJS_DIR)."""
    override = os.environ.get(FACESJS_DIR_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "tools" / "facesjs"


def find_node(node: str | None = None) -> str:
    """Path of the Node.js executable (argument, $TOON3D_NODE, then PATH); one-line error if absent."""
    candidate = node or os.environ.get(NODE_ENV) or "node"
    found = shutil.which(candidate)
    if found is None:
        raise Toon3dError(f"Node.js ('{candidate}') not found; 'toon3d data cartoons' needs Node.js >= 18: "
                          "install it (apt-get install nodejs npm, or nodejs.org), then run 'bash install.sh'")
    return found


def check_node_version(node: str) -> int:
    """The major version of `node`; a one-line error when it is older than Node 18 or does not run."""
    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        major = int(text.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        raise Toon3dError(f"'{node} --version' failed, so {node} is not a working Node.js; install Node.js "
                          f">= {MIN_NODE_MAJOR} (apt-get install nodejs npm, or nodejs.org), "
                          "then run 'bash install.sh'") from None
    if major < MIN_NODE_MAJOR:
        raise Toon3dError(f"{node} is Node.js {text}, 'toon3d data cartoons' needs >= {MIN_NODE_MAJOR}; "
                          "install a newer one (nodejs.org), then run 'bash install.sh'")
    return major


def _check_tool(tool_dir: Path) -> Path:
    script = tool_dir / SERVER_SCRIPT
    if not script.is_file():
        raise Toon3dError(f"{script} not found; run toon3d from a checkout of the repository, "
                          f"or set {FACESJS_DIR_ENV} to its tools/facesjs folder")
    if not (tool_dir / "node_modules" / "facesjs" / "package.json").is_file():
        raise Toon3dError(f"facesjs is not installed in {tool_dir}/node_modules; run "
                          f"'npm ci --prefix {tool_dir}' (or 'bash install.sh')")
    return script


class FacesjsServer:
    """A running `faces_server.mjs`: `with FacesjsServer() as s: for rec in s.faces(seed, range(n)): ...`."""

    def __init__(self, node: str | None = None, tool_dir: str | os.PathLike | None = None) -> None:
        self.tool_dir = Path(tool_dir) if tool_dir is not None else facesjs_dir()
        self.node = find_node(node)
        check_node_version(self.node)
        self.script = _check_tool(self.tool_dir)
        self.version = ""
        self._proc: subprocess.Popen | None = None
        self._stderr: Any = None

    def __enter__(self) -> "FacesjsServer":
        # stderr goes to a file: an unread pipe would block Node once 64 KB of warnings piled up.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._proc = subprocess.Popen([self.node, str(self.script)], cwd=self.tool_dir, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                      encoding="utf-8", bufsize=1)
        hello = self._read_line()
        self.version = str(hello.get("facesjs", ""))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the Node process."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.stdout.read()  # answers to requests nobody read (a consumer stopped early)
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._stderr.close()

    def _read_line(self) -> dict[str, Any]:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=10)
            self._stderr.seek(0)
            lines = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
            errors = [line for line in lines if "Error" in line] or lines
            reason = errors[0] if errors else f"exit status {self._proc.returncode}"
            raise Toon3dError(f"the facesjs Node process stopped ({reason}); reinstall it with "
                              f"'npm ci --prefix {self.tool_dir}'")
        record = json.loads(line)
        if "error" in record:
            raise RuntimeError(f"faces_server.mjs: {record['error']}")
        return record

    def faces(self, seed: int, indices: Iterable[int], feature: str | None = None) -> Iterator[dict[str, Any]]:
        """Face records {index, seed, gender, background, face, svg} in the order of `indices`.

        `feature` (e.g. "eye") draws that facesjs feature alone, to measure where it lands.
        """
        if self._proc is None:
            raise RuntimeError("FacesjsServer.faces used outside its 'with' block")
        if seed < 0:
            raise Toon3dError(f"--seed must be >= 0, got {seed}")
        suffix = f" {feature}" if feature else ""
        pending: deque[int] = deque()
        todo = iter(indices)

        def send(count: int) -> None:
            lines = []
            for index in todo:
                lines.append(f"{seed} {index}{suffix}\n")
                pending.append(index)
                if len(lines) == count:
                    break
            if lines:
                self._proc.stdin.write("".join(lines))
                self._proc.stdin.flush()

        # Keep one chunk queued ahead so Node draws while Python renders.
        send(2 * REQUEST_CHUNK)
        while pending:
            record = self._read_line()
            expected = pending.popleft()
            if record.get("index") != expected:
                raise RuntimeError(f"faces_server.mjs answered index {record.get('index')}, expected {expected}")
            yield record
            if len(pending) == REQUEST_CHUNK:
                send(REQUEST_CHUNK)


def render_face(record: dict[str, Any], size: int) -> np.ndarray:
    """Rasterise a face record from `FacesjsServer.faces`, framed by the layout → [size,size,3] uint8."""
    svg = reframe_svg(record["svg"], facesjs_crop_box(), size)
    return render_svg(svg, background=record["background"])


def face_label(record: dict[str, Any]) -> dict[str, Any]:
    """The labels.jsonl record of a face: its seed, gender, background and facesjs parameters."""
    return {"index": record["index"], "seed": record["seed"], "gender": record["gender"],
            "background": record["background"], "face": record["face"]}


def cartoon_images(seed: int, indices: Iterable[int], size: int,
                   node: str | None = None) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """(image [size,size,3] uint8, label) for each face index of `seed`, from one Node process."""
    with FacesjsServer(node=node) as server:
        for record in server.faces(seed, indices):
            yield render_face(record, size), face_label(record)


def make_cartoons(out: str | os.PathLike, settings: CartoonSettings, overwrite: bool = False,
                  node: str | None = None, created_by: str = "", progress: bool = True) -> Path:
    """Write `settings.n` cartoon faces to `out` in the toon3d folder format; returns `out`."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm import tqdm

    from toon3d.data.folder import FolderWriter

    if settings.n < 1:
        raise Toon3dError(f"--n must be at least 1, got {settings.n}")
    if not 16 <= settings.size <= 4096:
        raise Toon3dError(f"--size must be between 16 and 4096 pixels, got {settings.size}")
    if settings.seed < 0:
        raise Toon3dError(f"--seed must be >= 0, got {settings.seed}")
    if settings.workers < 1:
        raise Toon3dError(f"workers must be at least 1, got {settings.workers}")
    check_node_version(find_node(node))  # fail before creating anything
    _check_tool(facesjs_dir())
    x0, y0, side = facesjs_crop_box()
    extra = {"generator": "facesjs", "crop_box": [x0, y0, side], "facesjs_version": _installed_facesjs_version()}

    def render_and_save(writer: FolderWriter, record: dict[str, Any]) -> None:
        writer.put(record["index"], render_face(record, settings.size), label=face_label(record))

    # resvg and PNG encoding release the GIL, so a few threads overlap them; the pixels of face
    # i do not depend on which thread drew it.
    with FolderWriter(out, "cartoons", settings.size, seed=settings.seed, overwrite=overwrite,
                      created_by=created_by, extra_meta=extra) as writer, \
            FacesjsServer(node=node) as server, \
            ThreadPoolExecutor(max_workers=settings.workers) as pool, \
            tqdm(total=settings.n, desc="cartoons", unit="face", disable=not progress) as bar:
        in_flight: deque[Future] = deque()
        for record in server.faces(settings.seed, range(settings.n)):
            in_flight.append(pool.submit(render_and_save, writer, record))
            while len(in_flight) > 4 * settings.workers or (in_flight and in_flight[0].done()):
                in_flight.popleft().result()
                bar.update(1)
        while in_flight:
            in_flight.popleft().result()
            bar.update(1)
    return Path(out)


def _installed_facesjs_version() -> str:
    package = facesjs_dir() / "node_modules" / "facesjs" / "package.json"
    return str(json.loads(package.read_text()).get("version", ""))
