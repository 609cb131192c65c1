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
    payload, document = _encode(model, extra_metadata)
    tensor_path.parent.mkdir(parents=True, exist_ok=True)
    # Tensors first: a reader that sees the new JSON with the old tensors (or the reverse) fails the checksum
    # instead of running mismatched weights.
    write_atomically(tensor_path, payload)
    write_atomically(metadata_path, document)


def load_model(path: Path) -> tuple[Reconstructor, dict[str, Any]]:
    """The saved model and the extra metadata saved with it; ModelFileError saying why if untrustworthy."""
    tensor_path, metadata_path = model_paths(path)
    document = _read_bytes(metadata_path)
    # The metadata is checked before the tensors are read, so a broken JSON file is named as such.
    _document_fields(_parse_document(document, str(metadata_path)), str(metadata_path))
    return _decode(document, _read_bytes(tensor_path), where=str(tensor_path))


def model_to_bytes(model: Reconstructor, *, extra_metadata: Mapping[str, Any]) -> bytes:
    """The same model as one blob (for a models topic): 4-byte big-endian JSON length, JSON, tensors."""
    payload, document = _encode(model, extra_metadata)
    return len(document).to_bytes(4, "big") + document + payload


def model_from_bytes(blob: bytes, *, where: str) -> tuple[Reconstructor, dict[str, Any]]:
    """Inverse of `model_to_bytes`, with every check `load_model` makes; `where` names the blob in errors."""
    if len(blob) < 4:
        raise ModelFileError(f"{where}: too short to be a model ({len(blob)} bytes)")
    size = int.from_bytes(blob[:4], "big")
    if size > len(blob) - 4:
        raise ModelFileError(f"{where}: truncated (metadata of {size} bytes, {len(blob) - 4} present)")
    return _decode(blob[4 : 4 + size], blob[4 + size :], where=where)


def _encode(model: Reconstructor, extra_metadata: Mapping[str, Any]) -> tuple[bytes, bytes]:
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
    return payload, text.encode("utf-8")


def _decode(document_bytes: bytes, payload: bytes, *, where: str) -> tuple[Reconstructor, dict[str, Any]]:
    document = _parse_document(document_bytes, where)
    kind, metadata, extra, sha256, shapes = _document_fields(document, where)
    if hashlib.sha256(payload).hexdigest() != sha256:
        raise ModelFileError(f"{where}: tensor sha256 does not match the metadata; the model is corrupted")
    tensors = _parse_tensors(payload, where)
    _check_tensors(tensors, shapes, where)
    return _rebuild(kind, metadata, tensors, where), extra


def write_atomically(target: Path, content: bytes) -> None:
    """Replace `target` by `content`: readers and crashes see the old file or the new one, never a part."""
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


def _parse_document(content: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{where}: metadata is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise ModelFileError(f"{where}: expected a JSON object at the top level of the metadata")
    return document


def _document_fields(
    document: Mapping[str, Any], where: str
) -> tuple[str, dict[str, Any], dict[str, Any], str, dict[str, list[int]]]:
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    kind = document.get("kind")
    metadata = document.get("metadata")
    extra = document.get("extra")
    tensors = document.get("tensors")
    if not isinstance(kind, str) or not isinstance(metadata, dict) or not isinstance(extra, dict):
        raise ModelFileError(f"{where}: 'kind' must be a string, 'metadata' and 'extra' objects")
    if not isinstance(tensors, dict):
        raise ModelFileError(f"{where}: 'tensors' must be an object with sha256 and shapes")
    sha256 = tensors.get("sha256")
    shapes = tensors.get("shapes")
    if not isinstance(sha256, str) or not isinstance(shapes, dict):
        raise ModelFileError(f"{where}: 'tensors' must hold a 'sha256' string and a 'shapes' object")
    return kind, metadata, extra, sha256, shapes


def _parse_tensors(payload: bytes, where: str) -> Tensors:
    try:
        tensors: Tensors = safetensors.numpy.load(payload)
    except Exception as error:  # the parser's own error type is not part of its public API
        raise ModelFileError(f"{where}: not a valid safetensors file ({error})") from error
    return tensors


def _check_tensors(tensors: Mapping[str, npt.NDArray[Any]], shapes: Mapping[str, Any], where: str) -> None:
    if set(tensors) != set(shapes):
        raise ModelFileError(
            f"{where}: tensors {sorted(tensors)} do not match the metadata's {sorted(shapes)}"
        )
    for name, value in tensors.items():
        if value.dtype != np.float32:
            raise ModelFileError(f"{where}: tensor {name!r} is {value.dtype}, expected float32")
        if list(value.shape) != shapes[name]:
            raise ModelFileError(
                f"{where}: tensor {name!r} has shape {list(value.shape)}, the metadata says {shapes[name]}"
            )
        if not np.isfinite(value).all():
            raise ModelFileError(f"{where}: tensor {name!r} holds NaN or infinite values")


def _rebuild(kind: str, metadata: Mapping[str, Any], tensors: Tensors, where: str) -> Reconstructor:
    # The package's factory imports this module, so it is imported here, when a model is actually loaded.
    from streamwatch.models import load_reconstructor

    try:
        return load_reconstructor(kind, metadata, tensors)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{where}: does not describe a valid {kind!r} model ({error})") from error
