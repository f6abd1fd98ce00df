"""The global adapter's versions: checkpointed every round, published, rolled back.

    STATE/versions/0003/adapter.npz    named float32 arrays (what the next round starts from)
    STATE/versions/0003/adapter.gguf   the same as a llama.cpp LoRA for devices
    STATE/versions/0003/version.json   round, metrics, privacy history and ε, sha256 of both files, base model
    STATE/versions/0003/version.sig    the operator's Ed25519 signature of version.json (server/signing.py)

A version the quality gate rejected (quality_gate.py) is kept in the same
sequence, marked `rejected` with its figures: never listed for devices, never
started from, but its round and privacy spent count.

Versions are append-only and each is written into a temporary directory,
fsynced, and renamed into place, so a crash leaves either the whole version
or none. The newest version is both what devices fetch and what a restarted
server resumes from (its `round` is the round offset). A rollback publishes a
copy of an earlier version as a new one: devices move to it by fetching the
newest as usual, and the round counter and the privacy spent keep counting.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tidings.federated.adapter import AdapterSpec, Arrays, export_gguf, load_arrays, save_arrays
from tidings.federated.atomic import exclusive
from tidings.models.registry import sha256_file
from tidings.server.signing import OperatorKey

SIGNATURE = "version.sig"


@dataclass(frozen=True)
class Version:
    version: int
    round: int
    created: str
    sha256: str  # of adapter.gguf, what devices load
    arrays_sha256: str
    layout: str
    spec: dict
    metrics: dict = field(default_factory=dict)
    privacy_history: list = field(default_factory=list)  # [noise multiplier, sampling rate] per noised round
    epsilon: float = 0.0
    delta: float = 1e-5
    rolled_back_to: int | None = None
    base_sha256: str = ""  # the base model GGUF the adapter is for; devices on another base refuse it
    rejected: bool = False  # failed the quality gate: kept, never offered to devices
    gate: dict = field(default_factory=dict)  # the quality gate's verdict (quality_gate.py)

    @property
    def adapter_spec(self) -> AdapterSpec:
        return AdapterSpec(**{**self.spec, "target_modules": tuple(self.spec["target_modules"])})


class AdapterRegistry:
    """`base_sha256`: the base model new versions are for (a rollback keeps its target's)."""

    def __init__(self, root: Path, base_sha256: str = "") -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.base_sha256 = base_sha256
        self.key = OperatorKey.load_or_create(self.root / "keys")

    @property
    def public_key_pem(self) -> bytes:
        return self.key.public_pem

    def dir(self, version: int) -> Path:
        return self.versions_dir / f"{version:04d}"

    def versions(self) -> list[Version]:
        found = []
        for path in sorted(self.versions_dir.glob("[0-9]" * 4)):
            meta = path / "version.json"
            if meta.is_file():
                found.append(Version(**json.loads(meta.read_text())))
        return found

    def published(self) -> list[Version]:
        """The versions devices may run: every version the quality gate did not reject."""
        return [v for v in self.versions() if not v.rejected]

    def newest(self) -> Version | None:
        """The newest published version: what devices fetch and the next round starts from."""
        published = self.published()
        return published[-1] if published else None

    def latest(self) -> Version | None:
        """The newest version, rejected or not: where the round count and the privacy spent stand."""
        versions = self.versions()
        return versions[-1] if versions else None

    def get(self, version: int) -> Version:
        meta = self.dir(version) / "version.json"
        if not meta.is_file():
            raise KeyError(f"no adapter version {version} in {self.root}")
        return Version(**json.loads(meta.read_text()))

    def arrays(self, version: int) -> Arrays:
        return load_arrays(self.dir(version) / "adapter.npz")

    def gguf(self, version: int) -> Path:
        return self.dir(version) / "adapter.gguf"

    def publish(self, arrays: Arrays, spec: AdapterSpec, layout: str, *, round: int, metrics: dict,
                privacy_history: list, epsilon: float, delta: float, rolled_back_to: int | None = None,
                base_sha256: str | None = None, rejected: bool = False, gate: dict | None = None) -> Version:
        with exclusive(self.root / "registry.lock"):  # the round's publish and an operator's rollback
            return self._publish(arrays, spec, layout, round=round, metrics=metrics, privacy_history=privacy_history,
                                 epsilon=epsilon, delta=delta, rolled_back_to=rolled_back_to,
                                 base_sha256=base_sha256, rejected=rejected, gate=gate)

    def _publish(self, arrays: Arrays, spec: AdapterSpec, layout: str, *, round: int, metrics: dict,
                 privacy_history: list, epsilon: float, delta: float, rolled_back_to: int | None,
                 base_sha256: str | None, rejected: bool, gate: dict | None) -> Version:
        newest = self.latest()
        if base_sha256 is None:
            base_sha256 = self.base_sha256 or (newest.base_sha256 if newest else "")
        number = newest.version + 1 if newest else 0
        tmp = self.versions_dir / f".tmp-{number:04d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_arrays(tmp / "adapter.npz", arrays)
        export_gguf(arrays, spec, tmp / "adapter.gguf")
        version = Version(version=number, round=round, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          sha256=sha256_file(tmp / "adapter.gguf"), arrays_sha256=sha256_file(tmp / "adapter.npz"),
                          layout=layout, spec=asdict(spec), metrics=metrics, privacy_history=privacy_history,
                          epsilon=epsilon, delta=delta, rolled_back_to=rolled_back_to, base_sha256=base_sha256,
                          rejected=rejected, gate=gate or {})
        manifest = json.dumps(asdict(version), indent=2).encode()
        (tmp / "version.json").write_bytes(manifest)
        (tmp / SIGNATURE).write_bytes(self.key.sign(manifest))
        for name in ("adapter.npz", "adapter.gguf", "version.json", SIGNATURE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, self.dir(number))
        _fsync_dir(self.versions_dir)
        return version

    def rollback(self, to: int) -> Version:
        """Publish version `to` again as the newest (keeping the round count and the privacy spent)."""
        target, newest = self.get(to), self.latest()
        if target.rejected:
            raise ValueError(f"version {to} was rejected by the quality gate: it cannot be published")
        return self.publish(self.arrays(to), target.adapter_spec, target.layout, round=newest.round, metrics={"rolled_back_to": to},
                            privacy_history=newest.privacy_history, epsilon=newest.epsilon, delta=newest.delta,
                            rolled_back_to=to, base_sha256=target.base_sha256, gate=target.gate)

    def verify(self, version: int, digest: Callable[[Path], str] = sha256_file) -> bool:
        """Whether the version's files still match their signed sha256 (`digest`: e.g. one that caches)."""
        meta = self.get(version)
        return (digest(self.gguf(version)) == meta.sha256
                and digest(self.dir(version) / "adapter.npz") == meta.arrays_sha256)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def arrays_equal(a: Arrays, b: Arrays) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
