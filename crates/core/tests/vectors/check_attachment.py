#!/usr/bin/env python3
"""Checks the ok_* attachment vectors with independent implementations (pyca/cryptography
for HKDF, AES-256-GCM, ChaCha20-Poly1305 and HMAC; the blake3 package for BLAKE3), following
docs/formats/attachment.md rather than the Rust code. Run by .ci/run."""
import hashlib
import hmac
import pathlib
import struct
import sys

import blake3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

here = pathlib.Path(__file__).parent / "attachment"
checked = 0
for path in sorted(here.glob("ok_*")):
    v = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, val = line.split("=", 1)
            v[k.strip()] = val.strip()
    f, cek, plain = bytes.fromhex(v["file"]), bytes.fromhex(v["cek"]), bytes.fromhex(v["plaintext"])
    assert f[:4] == b"FVAT" and f[4] == 1 and f[7] == 0, path.name
    alg, log2 = f[5], f[6]
    att = f[8:24]
    alen = f[24]
    account = f[25:25 + alen].decode()
    salt = f[25 + alen:57 + alen]
    prefix = f[57 + alen:64 + alen]
    header = f[:64 + alen]
    assert att.hex() == v["attachment"] and account == v["account"], path.name

    def key(label):
        info = label + b"\x00" + bytes([alg]) + att
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(cek)

    aead = (AESGCM if alg == 1 else ChaCha20Poly1305)(key(b"fieldvault/v1/attachment/chunk-key"))
    mlen = struct.unpack(">Q", f[-8:])[0]
    m = f[-mlen:]
    assert m[:4] == b"FVAM" and m[4] == 1 and m[5:8] == b"\0\0\0", path.name
    count, length = struct.unpack(">QQ", m[8:24])
    hashes_ = [m[24 + 32 * i:56 + 32 * i] for i in range(count)]
    root, mac = m[24 + 32 * count:56 + 32 * count], m[56 + 32 * count:88 + 32 * count]
    assert hmac.compare_digest(hmac.new(key(b"fieldvault/v1/attachment/manifest-key"), header + m[:56 + 32 * count], hashlib.sha256).digest(), mac), f"{path.name}: mac"
    r = blake3.blake3(b"fieldvault/v1/attachment-root" + struct.pack(">Q", len(header)) + header + struct.pack(">QQ", count, length))
    for h in hashes_:
        r.update(h)
    assert r.digest() == root, f"{path.name}: root"
    cs, pos, out = 1 << log2, len(header), b""
    for i in range(count):
        n = (length - cs * (count - 1) if i == count - 1 else cs) + 16
        chunk = f[pos:pos + n]
        assert blake3.blake3(chunk).digest() == hashes_[i], f"{path.name}: hash {i}"
        nonce = prefix + struct.pack(">I", i) + bytes([1 if i == count - 1 else 0])
        out += aead.decrypt(nonce, chunk, header)
        pos += n
    assert pos == len(f) - mlen and out == plain, f"{path.name}: plaintext"
    checked += 1
if checked < 3:
    sys.exit(f"only {checked} ok vectors found")
print(f"attachment vectors: {checked} passed, 0 failed")
