"""The device's side of the fleet: fetch the newest global adapter, hot-swap it, keep a personal one on top.

Versions are fetched from the operator's HTTPS registry (its certificate
checked against the CA the device pinned at enrolment) or from a directory.

The engine runs three LoRAs at once: the shipped task adapter, the fleet's
global adapter and the wearer's personal adapter, each with its own scale
(llama.cpp sums their effects). A new global version is loaded beside the
old one, activated, and only then is the old one unloaded: a request never
runs without a global adapter, and a version that fails to load leaves the
previous one active.

A fetched version is trusted only if it is the operator's: its version.json
must carry a valid Ed25519 signature by the key the device pinned when it
enrolled, every file must match the sha256 in it, it must be for this device's
base model, and it must not be older than the version the device already has
(an old, validly signed version served again is a replay). Anything else is
refused and the device keeps what it runs.

The personal adapter is trained only on this device (train_local with the
task and global adapters merged below it) and never uploaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tidings.device.llm.engine import Engine
from tidings.federated.adapter import AdapterSpec, Arrays, export_gguf, load_arrays, save_arrays
from tidings.federated.atomic import write_atomically
from tidings.models.registry import sha256_file

OPERATOR_KEY = "operator.pub"  # in the device dir: the operator's public key, pinned at enrolment
OPERATOR_CA = "operator-ca.crt"  # ... and the CA of its TLS endpoints
DEVICE_SECRET = "canary-secret"
ROLLOUT_SERIAL = "rollout-serial"  # the newest rollout seen: an older one is a replay
CURRENT = "current.json"  # in global/: which fetched version to run
SIGNATURE = "version.sig"
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


def pin_operator_key(device_dir: Path, pem: bytes) -> Path:
    """Enrolment: trust versions signed by this key from now on. A different key is never pinned over it."""
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise IntegrityError("not a PEM public key; the operator's is STATE/keys/signing.pub") from None
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError("the operator key must be an Ed25519 public key")
    return _pin(Path(device_dir) / OPERATOR_KEY, pem, "operator key")


def _pin(path: Path, pem: bytes, what: str) -> Path:
    """Trust `pem` from now on; what is pinned is never silently replaced by something else."""
    if path.is_file() and path.read_bytes() != pem:
        raise IntegrityError(f"this device already trusts another {what} ({path}); remove it to enrol "
                             "with a new operator")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, pem)


def _pinned_key(device_dir: Path) -> Ed25519PublicKey:
    path = Path(device_dir) / OPERATOR_KEY
    if not path.is_file():
        raise IntegrityError(f"no operator key pinned in {device_dir}: enrol first "
                             "(`tidings federation enroll --operator-key signing.pub`)")
    return load_pem_public_key(path.read_bytes())


def pin_operator_ca(device_dir: Path, pem: bytes) -> Path:
    """Enrolment: the CA whose certificates the operator's SuperLink and HTTPS registry must present."""
    try:
        x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise IntegrityError("not a PEM certificate; the operator's CA is STATE/deploy/tls/ca.crt") from None
    return _pin(Path(device_dir) / OPERATOR_CA, pem, "operator CA")


class RegistryUnreachable(RuntimeError):
    """The registry could not be asked (network, TLS, server error): nothing changed on the device."""


class LocalRegistry:
    """Versions published into a directory this device can read (the operator's STATE, or a copy of it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def published(self) -> list[int]:
        """Every version but those the quality gate rejected (a forged flag fails the signature check)."""
        found = []
        for folder in sorted((self.root / "versions").glob("[0-9]" * 4)):
            meta = folder / "version.json"
            if meta.is_file() and not json.loads(meta.read_text()).get("rejected", False):
                found.append(int(folder.name))
        return found

    def read(self, version: int, name: str) -> bytes:
        try:
            return (self.root / "versions" / f"{version:04d}" / name).read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"adapter version {version} has no {name}: refused") from None

    def rollout(self) -> tuple[bytes, bytes] | None:
        manifest, signature = self.root / "rollout.json", self.root / "rollout.sig"
        if not manifest.is_file():
            return None
        return manifest.read_bytes(), signature.read_bytes() if signature.is_file() else b""


class HttpsRegistry:
    """The operator's registry endpoint (server/registry_http.py), its certificate checked against the pinned CA."""

    def __init__(self, url: str, ca: Path, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca))
        self.timeout_s = timeout_s

    def _get(self, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"{self.url}{path}", data=body,
                                         headers={"Content-Type": "application/json"} if body else {})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=self.timeout_s) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(f"{self.url}{path}: not published") from None
            raise RegistryUnreachable(f"the registry {self.url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryUnreachable(f"cannot reach the registry {self.url}: {reason}") from None

    def published(self) -> list[int]:
        return sorted(int(v["version"]) for v in json.loads(self._get("/versions"))["versions"])

    def read(self, version: int, name: str) -> bytes:
        try:
            return self._get(f"/versions/{version:04d}/{name}")
        except FileNotFoundError:
            raise IntegrityError(f"adapter version {version} has no {name}: refused") from None

    def rollout(self) -> tuple[bytes, bytes] | None:
        try:
            return self._get("/rollout.json"), self._get("/rollout.sig")
        except FileNotFoundError:
            return None

    def report_health(self, report: dict) -> None:
        self._get("/health", json.dumps(report).encode())


def open_registry(location: str | Path, device_dir: Path) -> LocalRegistry | HttpsRegistry:
    """An https:// URL (checked against the CA pinned at enrolment) or a directory."""
    if str(location).startswith("https://"):
        ca = Path(device_dir) / OPERATOR_CA
        if not ca.is_file():
            raise IntegrityError(f"no operator CA pinned in {device_dir}: enrol with it first "
                                 "(`tidings federation enroll --operator-key signing.pub --ca ca.crt`)")
        return HttpsRegistry(str(location), ca)
    if str(location).startswith("http://"):
        raise IntegrityError(f"{location}: the registry must be reached over https")
    return LocalRegistry(Path(location))


def local_versions(device_dir: Path) -> list[LocalVersion]:
    """The versions this device fetched and verified, oldest first."""
    found = []
    for folder in sorted((Path(device_dir) / GLOBAL).glob("[0-9]" * 4)):
        if (folder / "version.json").is_file():
            meta = json.loads((folder / "version.json").read_text())
            found.append(LocalVersion(meta["version"], meta["round"], folder / "adapter.gguf", folder / "adapter.npz"))
    return found


def device_secret(device_dir: Path) -> bytes:
    """Random bytes made once, never sent: they put the device in or out of each canary cohort."""
    path = Path(device_dir) / DEVICE_SECRET
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, os.urandom(32), mode=0o600)
    return path.read_bytes()


def in_canary(device_dir: Path, version: int, fraction: float) -> bool:
    """Whether this device takes canary `version`: a fresh, uniform draw per version, decided on the device."""
    digest = hashlib.sha256(device_secret(device_dir) + version.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def assigned_version(rollout: tuple[bytes, bytes], key: Ed25519PublicKey, device_dir: Path) -> int:
    """The version the operator's signed rollout gives this device: the canary if it drew it, else the promoted."""
    manifest, signature = rollout
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise IntegrityError("the rollout is not signed by the operator key this device enrolled with: "
                             "refused") from None
    state = json.loads(manifest)
    seen_path = Path(device_dir) / ROLLOUT_SERIAL
    seen = int(seen_path.read_text()) if seen_path.is_file() else 0
    if state["serial"] < seen:
        raise IntegrityError(f"the registry offers rollout {state['serial']}, older than rollout {seen} this "
                             "device saw: a replayed rollout, refused")
    seen_path.parent.mkdir(parents=True, exist_ok=True)
    seen_path.write_text(str(state["serial"]))
    canary = state.get("canary")
    if canary is not None and in_canary(device_dir, canary, state.get("fraction", 0.0)):
        return canary
    if state.get("promoted") is None:
        raise FileNotFoundError("the rollout has no promoted version yet")
    return state["promoted"]


def fetch_newest(registry: str | Path, device_dir: Path, *, base_sha256: str) -> LocalVersion:
    """Download the version this device is to run into `device_dir/global/NNNN/` (once), if it is the operator's.

    That is the one the operator's signed rollout assigns it (the canary, if the device drew it, else the
    promoted version), or the newest published version where there is no rollout (a registry folder).
    """
    key = _pinned_key(device_dir)
    source = open_registry(registry, device_dir)
    published = source.published()
    if not published:
        raise FileNotFoundError(f"no published adapter version in {registry}")
    rollout = source.rollout()
    if rollout is None and (Path(device_dir) / ROLLOUT_SERIAL).is_file():
        raise IntegrityError("the registry no longer serves the signed rollout this device follows: refused")
    number = assigned_version(rollout, key, device_dir) if rollout is not None else published[-1]
    manifest = source.read(number, "version.json")
    try:
        key.verify(source.read(number, SIGNATURE), manifest)
    except (InvalidSignature, IntegrityError):
        raise IntegrityError(f"adapter version {number} is not signed by the operator key this device "
                             "enrolled with: refused") from None
    meta = json.loads(manifest)
    if meta.get("rejected"):
        raise IntegrityError(f"adapter version {number} was rejected by the operator's quality gate: refused")
    have = max((v.version for v in local_versions(device_dir)), default=-1)
    # With a rollout, its signed serial is the replay check: it may send a canary device back to the promoted one.
    if meta["version"] < have and rollout is None:
        raise IntegrityError(f"the registry offers version {meta['version']}, older than version {have} on this "
                             "device: a replayed version, refused")
    if meta.get("base_sha256") != base_sha256:
        raise IntegrityError(f"adapter version {meta['version']} is for base model {meta.get('base_sha256')!s:.12}…, "
                             f"not this device's {base_sha256:.12}…: refused")
    target = Path(device_dir) / GLOBAL / f"{meta['version']:04d}"
    if not (target / "version.json").is_file():
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, digest in (("adapter.gguf", meta["sha256"]), ("adapter.npz", meta["arrays_sha256"])):
            (tmp / name).write_bytes(source.read(number, name))
            if sha256_file(tmp / name) != digest:
                shutil.rmtree(tmp)
                raise IntegrityError(f"adapter version {meta['version']} does not match its signed sha256: refused")
        (tmp / SIGNATURE).write_bytes(source.read(number, SIGNATURE))
        (tmp / "version.json").write_bytes(manifest)  # last: its presence marks a complete, verified version
        os.replace(tmp, target)
    write_atomically(Path(device_dir) / GLOBAL / CURRENT, json.dumps({"version": meta["version"]}))
    return LocalVersion(meta["version"], meta["round"], target / "adapter.gguf", target / "adapter.npz")


def current_version(device_dir: Path) -> LocalVersion | None:
    """The fetched version this device is to run (the last one `fetch_newest` assigned it)."""
    versions = {v.version: v for v in local_versions(device_dir)}
    path = Path(device_dir) / GLOBAL / CURRENT
    if path.is_file():
        chosen = versions.get(json.loads(path.read_text())["version"])
        if chosen is not None:
            return chosen
    return versions[max(versions)] if versions else None



class AdapterStack:
    """Which task/global/personal adapters an engine runs, and at what scales.

    The wearer's personal adapter is active only for reply drafts (`replying`): it is trained on the
    replies they sent and nothing gates it, and stacked on summaries it cost them (bench/personalization_bench.py),
    so summaries stay on the adapters the operator's quality gate measured.
    """

    def __init__(self, engine: Engine, *, task_scale: float = 1.0, global_scale: float = 1.0,
                 personal_scale: float = 1.0) -> None:
        self.engine = engine
        self.scales = {TASK: task_scale, GLOBAL: global_scale, PERSONAL: personal_scale}
        self.names: dict[str, str] = {}  # role -> loaded adapter name
        self.global_version: int | None = None
        self.personal_file: tuple[Path, int] | None = None  # (path, mtime_ns) of the loaded personal adapter
        self._replying = False

    def _activate(self) -> None:
        self.engine.set_adapters({name: self.scales[role] for role, name in self.names.items()
                                  if role != PERSONAL or self._replying})

    @contextlib.contextmanager
    def replying(self) -> Iterator[None]:
        """The personal adapter on top for the block (a no-op without one)."""
        if PERSONAL not in self.names:
            yield
            return
        self._replying = True
        self._activate()
        try:
            yield
        finally:
            self._replying = False
            self._activate()

    def set_task(self, path: Path) -> None:
        self._swap(TASK, path, TASK)

    def set_global(self, local: LocalVersion) -> None:
        self._swap(GLOBAL, local.gguf, f"{GLOBAL}-v{local.version}")
        self.global_version = local.version

    def clear_global(self) -> None:
        """Back to no fleet adapter (the task adapter and the personal one stay)."""
        self._clear(GLOBAL)
        self.global_version = None

    def clear_personal(self) -> None:
        self._clear(PERSONAL)
        self.personal_file = None

    def _clear(self, role: str) -> None:
        name = self.names.pop(role, None)
        if name is not None:
            self._activate()
            self.engine.unload_adapter(name)

    def set_personal(self, path: Path, tag: str) -> None:
        self._swap(PERSONAL, path, f"{PERSONAL}-{tag}")
        self.personal_file = (Path(path), Path(path).stat().st_mtime_ns)

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
    """The personal adapter as npz (to train on next time) and GGUF (for the engine), the only GGUF kept."""
    folder = Path(device_dir) / "personal"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".adapter.npz.tmp"
    save_arrays(tmp, arrays)
    os.replace(tmp, folder / "adapter.npz")
    gguf = export_gguf(arrays, spec, folder / f"adapter-{tag}.gguf")
    for stale in folder.glob("adapter-*.gguf"):
        if stale != gguf:
            stale.unlink(missing_ok=True)
    return gguf


def current_personal(device_dir: Path) -> Path | None:
    """The personal adapter GGUF `personalize` wrote last, if any."""
    found = sorted((Path(device_dir) / "personal").glob("adapter-*.gguf"), key=lambda p: p.stat().st_mtime_ns)
    return found[-1] if found else None


def load_personal(device_dir: Path) -> Arrays | None:
    path = Path(device_dir) / "personal" / "adapter.npz"
    return load_arrays(path) if path.is_file() else None
