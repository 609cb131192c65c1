"""The model store: safetensors + JSON, atomic writes, and loads that refuse anything untrustworthy."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.core.reconstructor import Reconstructor
from streamwatch.models import (
    FORMAT_VERSION,
    ModelFileError,
    PcaReconstructor,
    build_reconstructor,
    load_model,
    save_model,
)
from streamwatch.models.store import model_paths


def trained_pca(seed: int = 0, length: int = 16, channels: int = 2) -> PcaReconstructor:
    rng = np.random.default_rng(seed)
    model = PcaReconstructor(length=length, channels=channels)
    model.fit(rng.standard_normal((60, length, channels)).astype(np.float32), seed=0)
    return model


def probe(length: int = 16, channels: int = 2) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(99).standard_normal((5, length, channels)).astype(np.float32)


def rewrite_tensors(base: Path, tensors: dict[str, np.ndarray[Any, Any]]) -> None:
    """Replace the tensor file *and* its checksum, as a buggy but honest writer would."""
    tensor_path, metadata_path = model_paths(base)
    payload = safetensors.numpy.save(tensors)
    tensor_path.write_bytes(payload)
    document = json.loads(metadata_path.read_text())
    document["tensors"]["sha256"] = hashlib.sha256(payload).hexdigest()
    metadata_path.write_text(json.dumps(document))


def edit_document(base: Path, edit: dict[str, Any]) -> None:
    _, metadata_path = model_paths(base)
    document = json.loads(metadata_path.read_text())
    document.update(edit)
    metadata_path.write_text(json.dumps(document))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Reconstructor]:
    model = trained_pca()
    base = tmp_path / "models" / "pump-7.v3"
    save_model(base, model, extra_metadata={"stream": "pump-7", "calibration": {"p99": 1.5}})
    return base, model


def test_round_trip_writes_two_files_and_restores_the_model(saved: tuple[Path, Reconstructor]) -> None:
    base, model = saved
    tensor_path, metadata_path = model_paths(base)
    assert tensor_path.name == "pump-7.v3.safetensors"
    assert metadata_path.name == "pump-7.v3.json"
    assert sorted(path.name for path in base.parent.iterdir()) == [metadata_path.name, tensor_path.name]
    document = json.loads(metadata_path.read_text())
    assert document["format_version"] == FORMAT_VERSION
    assert document["kind"] == "pca"
    assert document["metadata"] == model.metadata()
    assert document["tensors"]["sha256"] == hashlib.sha256(tensor_path.read_bytes()).hexdigest()
    loaded, extra = load_model(base)
    assert extra == {"stream": "pump-7", "calibration": {"p99": 1.5}}
    np.testing.assert_array_equal(loaded.reconstruct(probe()), model.reconstruct(probe()))


def test_either_file_name_finds_the_model(saved: tuple[Path, Reconstructor]) -> None:
    base, _ = saved
    for path in model_paths(base):
        loaded, _ = load_model(path)
        assert loaded.kind == "pca"


def test_tensor_file_is_safetensors_not_pickle(saved: tuple[Path, Reconstructor]) -> None:
    base, model = saved
    content = model_paths(base)[0].read_bytes()
    # safetensors: 8-byte little-endian header length, then a JSON header, then raw little-endian data.
    (header_length,) = struct.unpack("<Q", content[:8])
    header = json.loads(content[8 : 8 + header_length])
    assert not content.startswith(b"\x80")  # every pickle protocol >= 2 starts with PROTO (0x80)
    assert {name for name in header if name != "__metadata__"} == set(model.tensors())
    assert all(entry["dtype"] == "F32" for name, entry in header.items() if name != "__metadata__")


def test_saving_again_replaces_the_model_atomically(saved: tuple[Path, Reconstructor]) -> None:
    base, _ = saved
    newer = trained_pca(seed=1)
    save_model(base, newer, extra_metadata={"stream": "pump-7", "version": 4})
    # No temporary files are left behind, and the new model is what loads.
    assert len(list(base.parent.iterdir())) == 2
    loaded, extra = load_model(base)
    assert extra["version"] == 4
    np.testing.assert_array_equal(loaded.reconstruct(probe()), newer.reconstruct(probe()))


def test_corrupted_tensor_file_is_rejected(saved: tuple[Path, Reconstructor]) -> None:
    base, _ = saved
    tensor_path = model_paths(base)[0]
    content = bytearray(tensor_path.read_bytes())
    content[-3] ^= 0x40  # one flipped bit in the weights
    tensor_path.write_bytes(bytes(content))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(base)


def test_truncated_tensor_file_is_rejected_even_with_a_matching_checksum(
    saved: tuple[Path, Reconstructor],
) -> None:
    base, _ = saved
    tensor_path, metadata_path = model_paths(base)
    truncated = tensor_path.read_bytes()[:40]
    tensor_path.write_bytes(truncated)
    edit_document(
        base,
        {"tensors": {**json.loads(metadata_path.read_text())["tensors"], "sha256": _sha(truncated)}},
    )
    with pytest.raises(ModelFileError, match="not a valid safetensors file"):
        load_model(base)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_weights_are_rejected(tmp_path: Path, bad_value: float) -> None:
    model = build_reconstructor("conv", length=16, channels=1)
    base = tmp_path / "conv"
    save_model(base, model, extra_metadata={})
    tensors = model.tensors()
    name = sorted(tensors)[0]
    tensors[name].flat[0] = bad_value
    rewrite_tensors(base, tensors)
    with pytest.raises(ModelFileError, match=f"tensor '{name}' holds NaN or infinite"):
        load_model(base)


def test_saving_non_finite_weights_is_refused(tmp_path: Path) -> None:
    tensors = trained_pca().tensors()
    tensors["components"][0, 0] = np.nan
    model = PcaReconstructor.from_tensors(trained_pca().metadata(), tensors)
    with pytest.raises(ValueError, match="not finite"):
        save_model(tmp_path / "broken", model, extra_metadata={})
    assert list(tmp_path.iterdir()) == []


def test_shapes_that_disagree_with_the_metadata_are_rejected(saved: tuple[Path, Reconstructor]) -> None:
    base, model = saved
    tensors = model.tensors()
    tensors["components"] = tensors["components"][:, :-1].copy()
    rewrite_tensors(base, tensors)
    with pytest.raises(ModelFileError, match="shape"):
        load_model(base)


def test_tensors_that_do_not_fit_the_architecture_are_rejected(tmp_path: Path) -> None:
    model = build_reconstructor("conv", length=16, channels=1)
    base = tmp_path / "conv"
    save_model(base, model, extra_metadata={})
    document = json.loads(model_paths(base)[1].read_text())
    edit_document(base, {"metadata": {**document["metadata"], "width": document["metadata"]["width"] * 2}})
    with pytest.raises(ModelFileError, match="does not describe a valid 'conv' model"):
        load_model(base)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"format_version": FORMAT_VERSION + 1}, "format_version"),
        ({"kind": "transformer"}, "unknown reconstructor kind"),
        ({"kind": 3}, "'kind' must be a string"),
        ({"tensors": {"sha256": "0" * 64}}, "'shapes'"),
    ],
)
def test_bad_metadata_documents_are_rejected(
    saved: tuple[Path, Reconstructor], edit: dict[str, Any], reason: str
) -> None:
    base, _ = saved
    edit_document(base, edit)
    with pytest.raises(ModelFileError, match=reason):
        load_model(base)


def test_missing_or_unreadable_files_are_rejected(saved: tuple[Path, Reconstructor], tmp_path: Path) -> None:
    base, _ = saved
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "nothing-here")
    model_paths(base)[1].write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(base)
    model_paths(base)[0].unlink()
    model_paths(base)[1].write_text("[]")
    with pytest.raises(ModelFileError, match="JSON object"):
        load_model(base)


@settings(max_examples=15, deadline=None)
@given(
    length=st.integers(1, 24),
    channels=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    extra=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
)
def test_any_pca_model_round_trips_exactly(
    tmp_path_factory: pytest.TempPathFactory, length: int, channels: int, seed: int, extra: dict[str, Any]
) -> None:
    model = trained_pca(seed, length, channels)
    base = tmp_path_factory.mktemp("store") / "model"
    save_model(base, model, extra_metadata=extra)
    loaded, loaded_extra = load_model(base)
    assert loaded_extra == extra
    assert loaded.metadata() == model.metadata()
    np.testing.assert_array_equal(
        loaded.reconstruct(probe(length, channels)), model.reconstruct(probe(length, channels))
    )


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
