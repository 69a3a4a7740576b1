#!/usr/bin/env python3
"""Checks the attachment vectors with independent implementations (pyca/cryptography for
HKDF, AES-256-GCM, ChaCha20-Poly1305 and HMAC; the blake3 package for BLAKE3), following
docs/formats/attachment.md rather than the Rust code: every ok_* vector, of header version 1
(bound to an account) and 2 (bound to a document), decrypts to its plaintext with every hash,
the root and the MAC recomputed; every fail_v2_edited_* vector (a header relabelled to name
the document it is opened as) parses to that document and fails its MAC. Run by .ci/run."""
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


def read_vector(path):
    v = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            k, val = line.split("=", 1)
            v[k.strip()] = val.strip()
    return v


def parse_header(f):
    """Section 4: returns (version, alg, log2, id, binding, salt, prefix, header bytes)."""
    assert f[:4] == b"FVAT" and f[4] in (1, 2) and f[7] == 0
    version, alg, log2, att = f[4], f[5], f[6], f[8:24]
    assert alg in (1, 2) and 12 <= log2 <= 24
    if version == 1:
        alen = f[24]
        assert 1 <= alen <= 64
        binding = {"account": f[25:25 + alen].decode()}
        pos = 25 + alen
    else:
        clen = f[24]
        assert 1 <= clen <= 64
        collection = f[25:25 + clen].decode()
        pos = 25 + clen
        dlen = struct.unpack(">H", f[pos:pos + 2])[0]
        assert 1 <= dlen <= 256
        document = f[pos + 2:pos + 2 + dlen].decode()
        pos += 2 + dlen
        binding = {"collection": collection, "document": document}
        assert pos == 8 + 16 + 1 + clen + 2 + dlen
    salt, prefix = f[pos:pos + 32], f[pos + 32:pos + 39]
    return version, alg, log2, att, binding, salt, prefix, f[:pos + 39]


def check(path):
    """Returns (version, whether the manifest MAC verifies) after checking the binding."""
    v = read_vector(path)
    f, cek = bytes.fromhex(v["file"]), bytes.fromhex(v["cek"])
    version, alg, log2, att, binding, salt, prefix, header = parse_header(f)
    assert att.hex() == v["attachment"], f"{path.name}: id"
    assert all(binding[k] == v[k] for k in binding), f"{path.name}: binding {binding}"

    def key(label):
        info = label + b"\x00" + bytes([alg]) + att
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(cek)

    mlen = struct.unpack(">Q", f[-8:])[0]
    m = f[-mlen:]
    assert m[:4] == b"FVAM" and m[4] == 1 and m[5:8] == b"\0\0\0", path.name
    count, length = struct.unpack(">QQ", m[8:24])
    hashes_ = [m[24 + 32 * i:56 + 32 * i] for i in range(count)]
    root, mac = m[24 + 32 * count:56 + 32 * count], m[56 + 32 * count:88 + 32 * count]
    expected_mac = hmac.new(key(b"fieldvault/v1/attachment/manifest-key"), header + m[:56 + 32 * count], hashlib.sha256)
    if not hmac.compare_digest(expected_mac.digest(), mac):
        return version, False
    r = blake3.blake3(b"fieldvault/v1/attachment-root" + struct.pack(">Q", len(header)) + header + struct.pack(">QQ", count, length))
    for h in hashes_:
        r.update(h)
    assert r.digest() == root, f"{path.name}: root"
    aead = (AESGCM if alg == 1 else ChaCha20Poly1305)(key(b"fieldvault/v1/attachment/chunk-key"))
    cs, pos, out = 1 << log2, len(header), b""
    for i in range(count):
        n = (length - cs * (count - 1) if i == count - 1 else cs) + 16
        chunk = f[pos:pos + n]
        assert blake3.blake3(chunk).digest() == hashes_[i], f"{path.name}: hash {i}"
        nonce = prefix + struct.pack(">I", i) + bytes([1 if i == count - 1 else 0])
        out += aead.decrypt(nonce, chunk, header)
        pos += n
    assert pos == len(f) - mlen and out == bytes.fromhex(v["plaintext"]), f"{path.name}: plaintext"
    return version, True


checked = {1: 0, 2: 0}
for path in sorted(here.glob("ok_*")):
    version, mac_ok = check(path)
    assert mac_ok, f"{path.name}: mac"
    checked[version] += 1
relabelled = 0
for path in sorted(here.glob("fail_v2_edited_*")):
    version, mac_ok = check(path)
    assert version == 2 and not mac_ok, f"{path.name}: a relabelled header must fail the MAC"
    relabelled += 1
if checked[1] < 3 or checked[2] < 3 or relabelled < 2:
    sys.exit(f"too few vectors: {checked[1]} ok v1, {checked[2]} ok v2, {relabelled} relabelled v2")
print(f"attachment vectors: {checked[1]} ok v1 and {checked[2]} ok v2 passed, {relabelled} relabelled v2 refused, 0 failed")
