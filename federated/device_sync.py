"""The device's side of the fleet: fetch the newest global adapter, hot-swap it, keep a personal one on top.

The engine runs three LoRAs at once: the shipped task adapter, the fleet's
global adapter and the wearer's personal adapter, each with its own scale
(llama.cpp sums their effects). A new global version is loaded beside the
old one, activated, and only then is the old one unloaded: a request never
runs without a global adapter, and a version that fails to load leaves the
previous one active. Fetched files are checked against the published sha256.

The personal adapter is trained only on this device (train_local with the
task and global adapters merged below it) and never uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tidings.device.llm.engine import Engine
from tidings.federated.adapter import AdapterSpec, Arrays, export_gguf, load_arrays, save_arrays
from tidings.models.registry import sha256_file

GLOBAL = "global"
PERSONAL = "personal"
TASK = "task"


@dataclass(frozen=True)
class LocalVersion:
    version: int
    round: int
    gguf: Path
    arrays: Path


class IntegrityError(RuntimeError):
    pass


def fetch_newest(registry: Path, device_dir: Path) -> LocalVersion:
    """Copy the newest published version into `device_dir/global/NNNN/` (once), checking its sha256."""
    versions = sorted(p for p in (Path(registry) / "versions").glob("[0-9]" * 4) if (p / "version.json").is_file())
    if not versions:
        raise FileNotFoundError(f"no published adapter version in {registry}")
    source = versions[-1]
    meta = json.loads((source / "version.json").read_text())
    target = Path(device_dir) / "global" / source.name
    if not (target / "version.json").is_file():
        tmp = target.with_name(f".tmp-{source.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        if sha256_file(tmp / "adapter.gguf") != meta["sha256"] or \
                sha256_file(tmp / "adapter.npz") != meta["arrays_sha256"]:
            shutil.rmtree(tmp)
            raise IntegrityError(f"adapter version {meta['version']} does not match its published sha256")
        os.replace(tmp, target)
    return LocalVersion(meta["version"], meta["round"], target / "adapter.gguf", target / "adapter.npz")


class AdapterStack:
    """Which task/global/personal adapters an engine runs, and at what scales."""

    def __init__(self, engine: Engine, *, task_scale: float = 1.0, global_scale: float = 1.0,
                 personal_scale: float = 1.0) -> None:
        self.engine = engine
        self.scales = {TASK: task_scale, GLOBAL: global_scale, PERSONAL: personal_scale}
        self.names: dict[str, str] = {}  # role -> loaded adapter name
        self.global_version: int | None = None

    def _activate(self) -> None:
        self.engine.set_adapters({name: self.scales[role] for role, name in self.names.items()})

    def set_task(self, path: Path) -> None:
        self._swap(TASK, path, TASK)

    def set_global(self, local: LocalVersion) -> None:
        self._swap(GLOBAL, local.gguf, f"{GLOBAL}-v{local.version}")
        self.global_version = local.version

    def set_personal(self, path: Path, tag: str) -> None:
        self._swap(PERSONAL, path, f"{PERSONAL}-{tag}")

    def _swap(self, role: str, path: Path, name: str) -> None:
        old = self.names.get(role)
        if old == name:
            return
        self.engine.load_adapter(path, name)
        self.names[role] = name
        try:
            self._activate()
        except Exception:
            self.engine.unload_adapter(name)
            if old is None:
                del self.names[role]
            else:
                self.names[role] = old
            raise
        if old is not None:
            self.engine.unload_adapter(old)

    @property
    def active(self) -> dict[str, float]:
        return self.engine.active_adapters


def save_personal(arrays: Arrays, spec: AdapterSpec, device_dir: Path, tag: str) -> Path:
    """The personal adapter as npz (to train on next time) and GGUF (for the engine)."""
    folder = Path(device_dir) / "personal"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".adapter.npz.tmp"
    save_arrays(tmp, arrays)
    os.replace(tmp, folder / "adapter.npz")
    return export_gguf(arrays, spec, folder / f"adapter-{tag}.gguf")


def load_personal(device_dir: Path) -> Arrays | None:
    path = Path(device_dir) / "personal" / "adapter.npz"
    return load_arrays(path) if path.is_file() else None
