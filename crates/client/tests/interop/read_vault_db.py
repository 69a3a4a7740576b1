#!/usr/bin/env python3
"""Opens a Fieldvault account database with a different SQLCipher 4 build (PyPI
sqlcipher3-binary), using only what docs/formats/database.md documents, and prints its
documents as JSON. Usage: read_vault_db.py DB_PATH KEY_HEX"""
import json
import sys

import sqlcipher3

path, key_hex = sys.argv[1], sys.argv[2]
conn = sqlcipher3.connect(path)
conn.execute(f"PRAGMA key = \"x'{key_hex}'\"")
for name, value in [
    ("cipher_page_size", "8192"),
    ("kdf_iter", "256000"),
    ("cipher_kdf_algorithm", "PBKDF2_HMAC_SHA512"),
    ("cipher_hmac_algorithm", "HMAC_SHA256"),
    ("cipher_use_hmac", "ON"),
    ("cipher_plaintext_header_size", "0"),
]:
    conn.execute(f"PRAGMA {name} = {value}")
rows = conn.execute("SELECT collection, id, version, body FROM documents ORDER BY collection, id").fetchall()
print(json.dumps({
    "cipher_version": conn.execute("PRAGMA cipher_version").fetchone()[0],
    "documents": [{"collection": c, "id": i, "version": v, "body": json.loads(b)} for c, i, v, b in rows],
}))
