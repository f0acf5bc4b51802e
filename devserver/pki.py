"""A throw-away PKI for tests and the demo server, made with the ``openssl`` CLI.

One CA (``ca.pem``/``ca.key``) and one server certificate signed by it
(``localhost.crt``/``localhost.key``, the names Prosody's certificate lookup
understands). Nothing here is secret: it exists so that clients can keep TLS
verification switched on against a local server.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 3650
# Regenerate anything that expires within this many seconds.
MIN_REMAINING_SECONDS = 7 * 24 * 3600

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = headunit throw-away test CA
O = headunit tests
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""


class PkiError(RuntimeError):
    """The openssl CLI failed or produced files that do not verify."""


@dataclass(frozen=True)
class Pki:
    """Paths of a generated CA and of the server certificate it signed."""

    folder: Path
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    hostnames: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """A client SSLContext that trusts only this CA, with hostname checks on."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_pki(folder: Path, hostnames: Sequence[str] = ("localhost",)) -> Pki:
    """Create (or reuse, when still valid) a CA and a server cert under ``folder``."""
    if not hostnames:
        raise ValueError("make_pki needs at least one hostname")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        folder=folder,
        ca_cert=folder / "ca.pem",
        ca_key=folder / "ca.key",
        cert=folder / "localhost.crt",
        key=folder / "localhost.key",
        hostnames=tuple(hostnames),
    )
    if not _ca_is_valid(pki):
        log.info("generating throw-away CA in %s", folder)
        _make_ca(pki)
        pki.cert.unlink(missing_ok=True)
    if not _server_is_valid(pki):
        log.info("generating server certificate for %s in %s", ", ".join(hostnames), folder)
        _make_server_cert(pki)
    return pki


def _openssl(*args: str, stdin: str | None = None) -> str:
    """Run ``openssl`` and return its stdout; raise PkiError with its stderr."""
    try:
        done = subprocess.run(
            ["openssl", *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PkiError(f"cannot run openssl {args[0]}: {exc}") from exc
    if done.returncode != 0:
        raise PkiError(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _succeeds(*args: str) -> bool:
    """True when ``openssl *args`` exits 0."""
    try:
        _openssl(*args)
    except PkiError:
        return False
    return True


def _new_key(path: Path) -> None:
    """Write a fresh EC P-256 private key readable by the owner only."""
    tmp = path.with_suffix(".tmp")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(tmp))
    tmp.chmod(0o600)
    tmp.replace(path)


def _key_matches(cert: Path, key: Path) -> bool:
    """True when ``key`` is the private half of ``cert``'s public key."""
    try:
        from_cert = _openssl("x509", "-in", str(cert), "-noout", "-pubkey")
        from_key = _openssl("pkey", "-in", str(key), "-pubout")
    except PkiError:
        return False
    return from_cert == from_key


def _not_expiring(cert: Path) -> bool:
    """True when ``cert`` parses and is valid for at least MIN_REMAINING_SECONDS."""
    return _succeeds("x509", "-in", str(cert), "-noout", "-checkend", str(MIN_REMAINING_SECONDS))


def _ca_is_valid(pki: Pki) -> bool:
    """True when the CA files exist, match and are not about to expire."""
    if not (pki.ca_cert.is_file() and pki.ca_key.is_file()):
        return False
    return _not_expiring(pki.ca_cert) and _key_matches(pki.ca_cert, pki.ca_key)


def _server_is_valid(pki: Pki) -> bool:
    """True when the server cert verifies against the CA and covers every hostname."""
    if not (pki.cert.is_file() and pki.key.is_file()):
        return False
    if not (_not_expiring(pki.cert) and _key_matches(pki.cert, pki.key)):
        return False
    if not _succeeds("verify", "-CAfile", str(pki.ca_cert), "-purpose", "sslserver", str(pki.cert)):
        return False
    try:
        san = _openssl("x509", "-in", str(pki.cert), "-noout", "-ext", "subjectAltName")
    except PkiError:
        return False
    names = {part.strip() for part in san.replace("\n", ",").split(",")}
    return all(f"DNS:{host}" in names for host in pki.hostnames)


def _make_ca(pki: Pki) -> None:
    """Generate the CA key and a self-signed CA certificate."""
    _new_key(pki.ca_key)
    with tempfile.TemporaryDirectory(dir=pki.folder) as tmp:
        config = Path(tmp) / "ca.cnf"
        config.write_text(_CA_CONFIG)
        out = Path(tmp) / "ca.pem"
        _openssl(
            "req", "-new", "-x509", "-config", str(config), "-key", str(pki.ca_key),
            "-days", str(CA_DAYS), "-sha256", "-out", str(out),
        )  # fmt: skip
        out.replace(pki.ca_cert)


def _server_extensions(hostnames: Sequence[str]) -> str:
    """The x509v3 extension section for a TLS server certificate."""
    alt_names = [f"DNS:{host}" for host in hostnames] + ["IP:127.0.0.1"]
    return (
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
        f"subjectAltName = {', '.join(alt_names)}\n"
    )


def _make_server_cert(pki: Pki) -> None:
    """Generate the server key and a certificate for ``pki.hostnames`` signed by the CA."""
    _new_key(pki.key)
    with tempfile.TemporaryDirectory(dir=pki.folder) as tmp:
        csr, ext, out = Path(tmp) / "server.csr", Path(tmp) / "server.ext", Path(tmp) / "server.crt"
        ext.write_text(_server_extensions(pki.hostnames))
        _openssl(
            "req", "-new", "-key", str(pki.key),
            "-subj", f"/CN={pki.hostnames[0]}/O=headunit tests", "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key),
            "-set_serial", _random_serial(),
            "-days", str(SERVER_DAYS), "-sha256", "-extfile", str(ext), "-out", str(out),
        )  # fmt: skip
        out.replace(pki.cert)
    if not _server_is_valid(pki):
        raise PkiError(f"new server certificate {pki.cert} does not verify against {pki.ca_cert}")


def _random_serial() -> str:
    """A random positive 63-bit certificate serial number, so reissues never collide."""
    return str(int.from_bytes(os.urandom(8), "big") >> 1 or 1)
