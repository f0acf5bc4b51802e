"""Certificate pinning by SPKI SHA-256 (the hash of the server key, as in HPKP and DANE 3 1 1).

A pin survives certificate renewals as long as the server keeps its key.
"""

from __future__ import annotations

import base64
import hashlib
import ssl

from pyasn1.codec.der import decoder, encoder
from pyasn1_modules import rfc2459


def spki_sha256(pem_or_der: str | bytes) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo."""
    der = ssl.PEM_cert_to_DER_cert(pem_or_der) if isinstance(pem_or_der, str) else pem_or_der
    certificate, _ = decoder.decode(der, asn1Spec=rfc2459.Certificate())
    spki = encoder.encode(certificate["tbsCertificate"]["subjectPublicKeyInfo"])
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def pin_matches(pem: str, pins: tuple[str, ...]) -> bool:
    """True if there are no pins, or the certificate's key is one of them."""
    return not pins or spki_sha256(pem) in pins
