"""The model store: weights as safetensors, everything else as JSON beside them, never pickle.

A model saved at `<path>` is two files: `<path>.safetensors` (float32 tensors only; the format cannot carry
code) and `<path>.json` (kind, hyper-parameters, the caller's extra metadata, a format version and the sha256
of the tensor file). Each is written to a temporary file and renamed into place, so a reader never sees a
half-written file; loading trusts nothing: checksum, finiteness and shapes are all verified first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import safetensors.numpy

from streamwatch.core.reconstructor import Reconstructor

FORMAT_VERSION = 1
TENSOR_SUFFIX = ".safetensors"
METADATA_SUFFIX = ".json"

Tensors = dict[str, npt.NDArray[Any]]


class ModelFileError(ValueError):
    """A saved model that cannot be trusted: missing, corrupted, or not matching its own metadata."""


def model_paths(path: Path) -> tuple[Path, Path]:
    """The tensor and metadata files for a model path, given with or without either suffix."""
    base = path.with_suffix("") if path.suffix in (TENSOR_SUFFIX, METADATA_SUFFIX) else path
    return base.with_name(base.name + TENSOR_SUFFIX), base.with_name(base.name + METADATA_SUFFIX)


def save_model(path: Path, model: Reconstructor, *, extra_metadata: Mapping[str, Any]) -> None:
    """Write the model's tensors and metadata atomically; ValueError if a tensor is not finite."""
    tensor_path, metadata_path = model_paths(path)
    tensors = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in model.tensors().items()}
    for name, value in tensors.items():
        if not np.isfinite(value).all():
            raise ValueError(f"refusing to save {model.kind} model: tensor {name!r} is not finite")
    payload: bytes = safetensors.numpy.save(tensors)
    document = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "metadata": model.metadata(),
        "extra": dict(extra_metadata),
        "tensors": {
            "sha256": hashlib.sha256(payload).hexdigest(),
            "shapes": {name: list(value.shape) for name, value in tensors.items()},
        },
    }
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    # Tensors first: a reader that sees the new JSON with the old tensors (or the reverse) fails the checksum
    # instead of running mismatched weights.
    _write_atomically(tensor_path, payload)
    _write_atomically(metadata_path, text.encode("utf-8"))


def load_model(path: Path) -> tuple[Reconstructor, dict[str, Any]]:
    """The saved model and the extra metadata saved with it; ModelFileError saying why if untrustworthy."""
    tensor_path, metadata_path = model_paths(path)
    document = _read_document(metadata_path)
    kind, metadata, extra, sha256, shapes = _document_fields(document, metadata_path)
    payload = _read_bytes(tensor_path)
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ModelFileError(
            f"{tensor_path}: sha256 does not match {metadata_path.name}; the file is corrupted"
        )
    tensors = _parse_tensors(payload, tensor_path)
    _check_tensors(tensors, shapes, tensor_path)
    return _rebuild(kind, metadata, tensors, tensor_path), extra


def _write_atomically(target: Path, content: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            # Durable before the rename, or a crash could leave the new name pointing at empty blocks.
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read ({error.strerror or error})") from error


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(_read_bytes(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise ModelFileError(f"{path}: expected a JSON object at the top level")
    return document


def _document_fields(
    document: Mapping[str, Any], path: Path
) -> tuple[str, dict[str, Any], dict[str, Any], str, dict[str, list[int]]]:
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    kind = document.get("kind")
    metadata = document.get("metadata")
    extra = document.get("extra")
    tensors = document.get("tensors")
    if not isinstance(kind, str) or not isinstance(metadata, dict) or not isinstance(extra, dict):
        raise ModelFileError(f"{path}: 'kind' must be a string, 'metadata' and 'extra' objects")
    if not isinstance(tensors, dict):
        raise ModelFileError(f"{path}: 'tensors' must be an object with sha256 and shapes")
    sha256 = tensors.get("sha256")
    shapes = tensors.get("shapes")
    if not isinstance(sha256, str) or not isinstance(shapes, dict):
        raise ModelFileError(f"{path}: 'tensors' must hold a 'sha256' string and a 'shapes' object")
    return kind, metadata, extra, sha256, shapes


def _parse_tensors(payload: bytes, path: Path) -> Tensors:
    try:
        tensors: Tensors = safetensors.numpy.load(payload)
    except Exception as error:  # the parser's own error type is not part of its public API
        raise ModelFileError(f"{path}: not a valid safetensors file ({error})") from error
    return tensors


def _check_tensors(tensors: Mapping[str, npt.NDArray[Any]], shapes: Mapping[str, Any], path: Path) -> None:
    if set(tensors) != set(shapes):
        raise ModelFileError(
            f"{path}: tensors {sorted(tensors)} do not match the metadata's {sorted(shapes)}"
        )
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise ModelFileError(f"{path}: tensor {name!r} is {value.dtype}, expected float32")
        if list(value.shape) != shapes[name]:
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {list(value.shape)}, the metadata says {shapes[name]}"
            )
        if not np.isfinite(value).all():
            raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values")


def _rebuild(kind: str, metadata: Mapping[str, Any], tensors: Tensors, path: Path) -> Reconstructor:
    # The package's factory imports this module, so it is imported here, when a model is actually loaded.
    from streamwatch.models import load_reconstructor

    try:
        return load_reconstructor(kind, metadata, tensors)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: does not describe a valid {kind!r} model ({error})") from error
