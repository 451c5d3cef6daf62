"""The model bundle: a folder of ONNX files described by ``manifest.json``.

``simclr export`` writes it (``training/export.py``); the server only reads it (``bundle/runtime.py``),
never PyTorch. The manifest says everything needed to feed and trust the models:

    {"format_version": 1, "model": {"name", "version", "created"},
     "preprocessing": {"input_size", "color_order", "mean", "std", "resize"},
     "embedding": {"dim", "normalized", "source", "whitening"}, "opset",
     "training": {"config", "step"},
     "files": {"encoder": {"path", "sha256", "bytes", "inputs", "outputs"}, "encoder_int8": ..., ...}}

``embedding.whitening`` is null for plain h, else how the whitening baked into the encoder
(and undone at the decoder's input) was fitted. A bundle may hold any subset of ``encoder``,
``encoder_int8``, ``decoder``, ``denoiser``.
:func:`load_manifest` refuses, with a message naming the problem, an unknown format version, a
missing file, a checksum mismatch and inconsistent facts.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simclr_search.bundle.preprocess import DESCRIPTOR_POLICY
from simclr_search.files import atomic_write

FORMAT_VERSION = 1
ROLES = ("encoder", "encoder_int8", "decoder", "denoiser")


class BundleError(ValueError):
    """The bundle cannot be used; the message names the file or field at fault."""


@dataclass(frozen=True)
class ModelFile:
    """One ONNX file of a bundle: its path in the folder, its tensors' shapes (``"batch"`` for a
    dynamic axis) and what is particular to its role (``details``: the denoiser's tiling, value
    ranges, the training run it came from, a quantisation note ...)."""

    path: str
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "inputs": self.inputs, "outputs": self.outputs, **self.details}

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ModelFile:
        """An entry of a written manifest (its checksum and size are dropped: rewriting fills them)."""
        rest = {k: v for k, v in entry.items() if k not in {"path", "inputs", "outputs"}}
        for written in ("sha256", "bytes"):
            rest.pop(written, None)
        return cls(entry["path"], entry["inputs"], entry["outputs"], rest)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the encoder's input; the resize policy names ``bundle.preprocess``'s."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    color_order: str = "RGB"
    layout: str = "NCHW float32, pixels/255 then (x-mean)/std"


@dataclass(frozen=True)
class EmbeddingInfo:
    """What the encoder file outputs: ``dim`` values, unit length if ``normalized``; ``whitening``
    says how the whitening baked into the file was fitted (None: plain h)."""

    dim: int
    normalized: bool
    source: str
    whitening: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@dataclass(frozen=True)
class BundleSpec:
    """Everything ``manifest.json`` says, typed: what ``simclr export`` writes."""

    model: ModelInfo
    preprocessing: Preprocessing
    embedding: EmbeddingInfo
    files: dict[str, ModelFile]
    opset: int
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": vars(self.model).copy(),
            "preprocessing": {
                **vars(self.preprocessing),
                "mean": list(self.preprocessing.mean),
                "std": list(self.preprocessing.std),
            },
            "embedding": vars(self.embedding).copy(),
            "opset": self.opset,
            "training": self.training,
            "files": {role: f.to_dict() for role, f in self.files.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleSpec:
        pre = dict(data["preprocessing"])
        pre["mean"], pre["std"] = tuple(pre["mean"]), tuple(pre["std"])
        return cls(
            ModelInfo(**data["model"]),
            Preprocessing(**pre),
            EmbeddingInfo(**data["embedding"]),
            {role: ModelFile.from_dict(e) for role, e in data["files"].items()},
            data["opset"],
            data.get("training", {}),
        )


@dataclass(frozen=True)
class Manifest:
    folder: Path
    data: dict[str, Any]

    @property
    def input_size(self) -> int:
        return int(self.data["preprocessing"]["input_size"])

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self.data["preprocessing"]["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self.data["preprocessing"]["std"])

    @property
    def embedding_dim(self) -> int:
        return int(self.data["embedding"]["dim"])

    @property
    def encoder_sha256(self) -> str:
        return self.data["files"].get("encoder", {}).get("sha256", "")

    @property
    def embedding_space(self) -> str:
        """Which vectors this bundle's encoder makes: its file's checksum (whitening is baked in), so
        a new version that changes only the denoiser or decoder keeps the stores built with the
        last, and how a picture becomes one vector (``preprocess.DESCRIPTOR_POLICY``)."""
        return f"encoder sha256 {self.encoder_sha256[:16]}, {DESCRIPTOR_POLICY}"

    @property
    def normalized(self) -> bool:
        return bool(self.data["embedding"]["normalized"])

    def has(self, role: str) -> bool:
        return role in self.data["files"]

    def path(self, role: str) -> Path:
        if role not in self.data["files"]:
            raise BundleError(
                f"the bundle at {self.folder} has no {role} (it has {sorted(self.data['files'])})"
            )
        return self.folder / self.data["files"][role]["path"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, spec: BundleSpec) -> Path:
    """Fill in each file's sha256 and size, then write ``manifest.json`` atomically."""
    data = {**spec.to_dict(), "format_version": FORMAT_VERSION}
    for role, entry in data["files"].items():
        if role not in ROLES:
            raise BundleError(f"unknown bundle role {role!r}; expected one of {ROLES}")
        path = folder / entry["path"]
        entry["sha256"] = sha256_file(path)
        entry["bytes"] = path.stat().st_size
    text = json.dumps(data, indent=2, sort_keys=True)
    atomic_write(folder / "manifest.json", text.encode(), mode=0o644)
    return folder / "manifest.json"


def load_manifest(folder: str | os.PathLike[str], verify_checksums: bool = True) -> Manifest:
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.exists():
        raise BundleError(f"{folder} is not a model bundle: manifest.json is missing")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from exc
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported (this build reads {FORMAT_VERSION})"
        )
    for section, keys in {
        "preprocessing": ("input_size", "mean", "std", "color_order", "resize"),
        "embedding": ("dim", "normalized"),
        "files": (),
    }.items():
        if not isinstance(data.get(section), dict):
            raise BundleError(f"{path}: section {section!r} is missing")
        for key in keys:
            if key not in data[section]:
                raise BundleError(f"{path}: {section}.{key} is missing")
    pre = data["preprocessing"]
    if not (isinstance(pre["input_size"], int) and pre["input_size"] > 0):
        raise BundleError(f"{path}: preprocessing.input_size must be a positive integer")
    if len(pre["mean"]) != 3 or len(pre["std"]) != 3 or min(pre["std"]) <= 0:
        raise BundleError(f"{path}: preprocessing.mean and std need three values (std > 0)")
    if not (isinstance(data["embedding"]["dim"], int) and data["embedding"]["dim"] > 0):
        raise BundleError(f"{path}: embedding.dim must be a positive integer")
    if not data["files"]:
        raise BundleError(f"{path}: the bundle lists no model files")
    for role, entry in data["files"].items():
        if role not in ROLES:
            raise BundleError(f"{path}: unknown file role {role!r}; expected one of {ROLES}")
        file_path = folder / entry.get("path", "")
        if not entry.get("path") or not file_path.is_file():
            raise BundleError(
                f"{path}: {role} file {entry.get('path')!r} is missing from the bundle"
            )
        if verify_checksums and sha256_file(file_path) != entry.get("sha256"):
            raise BundleError(
                f"{path}: checksum mismatch for {entry['path']} (the file was changed or damaged)"
            )
    return Manifest(folder, data)
