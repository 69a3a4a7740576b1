#!/usr/bin/env python3
"""Re-checks the key-file, marker and counter vectors with hashlib, from
docs/formats/key-file.md rather than the Rust code: every section checksum of the ok_*
files verifies, and each *_flipped_bit file fails exactly one. Run by .ci/run."""
import hashlib
import pathlib
import struct
import sys

here = pathlib.Path(__file__).parent / "key-file"


def check(label, body):
    return hashlib.sha256(b"fieldvault/v1/check\0" + label + b"\0" + body).digest()[:8]


def key_file_bad_sections(b):
    assert b[:4] == b"FVKF" and b[4] in (1, 2, 3, 4) and b[5] == 0
    count, pos, bad = struct.unpack(">H", b[6:8])[0], 8, 0
    for _ in range(count):
        kind, length = b[pos], struct.unpack(">H", b[pos + 1:pos + 3])[0]
        framed = b[pos:pos + 3 + length]
        if check(b"keyfile-section", framed) != b[pos + 3 + length:pos + 11 + length]:
            bad += 1
        pos += 11 + length
    assert pos == len(b), "sections fill the file"
    return bad


def record_bad(b, magic, label):
    assert b[:4] == magic and b[4] == 1
    return int(check(label, b[:-8]) != b[-8:])


results = {}
for path in sorted(here.iterdir()):
    v = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, val = line.split("=", 1)
            v[k.strip()] = val.strip()
    b = bytes.fromhex(v["bytes"])
    if v["kind"] == "key_file":
        if v["expect"] not in ("ok", "checksum", "kdf_params", "malformed"):
            continue  # structural failures (truncation, magic, version) are not checksum cases
        bad = key_file_bad_sections(b)
    elif v["kind"] == "marker":
        bad = record_bad(b, b"FVVT", b"vault-marker")
    else:
        bad = record_bad(b, b"FVUC", b"unlock-counter")
    want = 1 if v["expect"] == "checksum" else 0
    assert bad == want, f"{path.name}: {bad} bad checksums, expected {want}"
    results[path.name] = bad
if len(results) < 8:
    sys.exit(f"only {len(results)} vectors checked")
print(f"key-file vectors: {len(results)} passed, 0 failed")
