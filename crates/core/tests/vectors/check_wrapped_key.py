#!/usr/bin/env python3
"""Checks the ok_* wrapped-key vectors with an independent implementation (pyca/cryptography),
following docs/formats/wrapped-key.md rather than the Rust code. Run by .ci/run."""
import hashlib
import hmac
import pathlib
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

here = pathlib.Path(__file__).parent / "wrapped-key"
checked = 0
for path in sorted(here.glob("ok_*")):
    v = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, val = line.split("=", 1)
            v[k.strip()] = val.strip()
    w, wk = bytes.fromhex(v["wrapped"]), bytes.fromhex(v["wrapping_key"])
    header, nonce, sealed = w[:44], w[44:56], w[56:]
    assert header[:4] == b"FVWK" and header[4] == 1 and header[5] == 1, path.name
    canary = hmac.new(wk, b"fieldvault/v1/canary", hashlib.sha256).digest()[:16]
    assert header[28:44] == canary, f"{path.name}: canary"
    account, bound = v["account"].encode(), bytes.fromhex(v["bound"])
    aad = (b"fieldvault/v1/wrapped-key\0" + bytes.fromhex(v["vault"]) + bytes([len(account)]) + account
           + len(bound).to_bytes(2, "big") + bound + header)
    assert AESGCM(wk).decrypt(nonce, sealed, aad).hex() == v["key"], f"{path.name}: key"
    checked += 1
if checked < 2:
    sys.exit(f"only {checked} ok vectors found")
print(f"wrapped-key vectors: {checked} passed, 0 failed")
