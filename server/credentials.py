"""TLS certificates and SuperNode keys of a deployment.

A private CA signs the certificate the operator's SuperLink and adapter
registry present (SAN: the addresses they listen on, and localhost).
Each SuperNode has an EC P-384 key pair in OpenSSH format; only SuperNodes
whose public key the operator registered with the SuperLink may join.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_tls(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1",), days: int = 365) -> dict[str, Path]:
    """ca.crt (with ca.key), server.pem and server.key in `folder` for a server reached at `hosts`.

    The CA is made once: devices pin it at enrolment. The server certificate is
    issued again (by the same CA) when it does not name every host in `hosts`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ca": folder / "ca.crt", "ca_key": folder / "ca.key", "cert": folder / "server.pem",
             "key": folder / "server.key"}
    if not (paths["ca"].is_file() and paths["ca_key"].is_file()):
        _make_ca(paths, days)
    if not (paths["cert"].is_file() and paths["key"].is_file()) or not _names(paths["cert"], hosts):
        _issue_server(paths, hosts, days)
    return paths


def _make_ca(paths: dict[str, Path], days: int) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tidings federation CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
    _write(paths["ca_key"], _pem_key(key), private=True)
    _write(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].unlink(missing_ok=True)  # issued by a CA that is gone


def _issue_server(paths: dict[str, Path], hosts: tuple[str, ...], days: int) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    ca_key = serialization.load_pem_private_key(paths["ca_key"].read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), *map(_general_name, hosts)]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(paths["key"], _pem_key(key), private=True)
    _write(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _names(cert_path: Path, hosts: tuple[str, ...]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(_general_name(host) in names for host in hosts)


def make_node_key(path: Path) -> tuple[Path, Path]:
    """An OpenSSH EC P-384 key pair at `path` and `path.pub` (made once)."""
    public = path.with_name(path.name + ".pub")
    if path.is_file() and public.is_file():
        return path, public
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                   serialization.NoEncryption()), private=True)
    _write(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH))
    return path, public
