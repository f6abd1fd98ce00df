"""The operator's signing key: every published adapter version carries an Ed25519 signature.

    STATE/keys/signing.pem    the private key (mode 0600, in a 0700 directory); never published
    STATE/keys/signing.pub    the public key, handed to devices when they enrol

A version's signature covers its version.json byte for byte, and version.json
holds the sha256 of every file of the version, its number and the base
model it is for. So a device that pinned the public key can tell a version
this operator published from one whoever can write the registry put there.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class OperatorKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> OperatorKey:
        path = keys_dir / "signing.pem"
        if path.is_file():
            return cls(serialization.load_pem_private_key(path.read_bytes(), password=None))
        keys_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        key = cls(Ed25519PrivateKey.generate())
        pem = key._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path.with_suffix(".tmp"), path)
        (keys_dir / "signing.pub").write_bytes(key.public_pem)
        return key

    @property
    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def signed(self, data: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's over `data` (what a device checks, shown to the operator)."""
        try:
            self._private.public_key().verify(signature, data)
        except InvalidSignature:
            return False
        return True
