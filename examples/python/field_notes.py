#!/usr/bin/env python3
"""Field notes: a small offline-first notes app on the Fieldvault SDK's Python bindings.

    pip install ./crates/ffi          # builds and installs the `fieldvault` package
    export FIELDVAULT_PASSPHRASE='a passphrase you will remember' FIELDVAULT_PASSWORD='...'
    python3 examples/python/field_notes.py --vault DIR login --server URL --user NAME --pin PIN
    python3 examples/python/field_notes.py --vault DIR add "pump 3 leaks"
    python3 examples/python/field_notes.py --vault DIR list
    python3 examples/python/field_notes.py --vault DIR sync

DIR holds the vault (DIR/vault) and this app's keystore (DIR/keystore.json). The keystore is
written in Python, as an Android or iOS app writes its own over the platform keystore: it
keeps the vault's secret sealed under the passphrase (scrypt and AES-GCM from the
`cryptography` package), and typing the passphrase stands in for the user-presence prompt.
"""

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import uuid

import fieldvault as fv
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

ACCOUNT = "default"
IDLE_LOCK_SECS = 300


def _kek(passphrase, salt):
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


class PassphraseFileKeystore(fv.Keystore):
    """The vault's secret in one file, sealed under the passphrase."""

    def __init__(self, path):
        self.path = path

    def _passphrase(self):
        p = os.environ.get("FIELDVAULT_PASSPHRASE")
        if not p:
            # No one confirmed their presence: the prompt was cancelled.
            raise fv.KeystoreError.Cancelled()
        return p

    def store(self, entry, secret):
        salt, nonce = os.urandom(16), os.urandom(12)
        sealed = AESGCM(_kek(self._passphrase(), salt)).encrypt(nonce, bytes(secret), entry.encode())
        record = {"entry": entry, "salt": salt.hex(), "nonce": nonce.hex(), "sealed": base64.b64encode(sealed).decode()}
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self, entry):
        try:
            with open(self.path) as f:
                record = json.load(f)
        except FileNotFoundError:
            raise fv.KeystoreError.NotFound()
        if record["entry"] != entry:
            raise fv.KeystoreError.NotFound()
        kek = _kek(self._passphrase(), bytes.fromhex(record["salt"]))
        try:
            return AESGCM(kek).decrypt(bytes.fromhex(record["nonce"]), base64.b64decode(record["sealed"]), entry.encode())
        except InvalidTag:
            raise fv.KeystoreError.Cancelled()  # a wrong passphrase confirms no one

    def delete(self, entry):
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass


def open_vault(state_dir, create=False):
    keystore = PassphraseFileKeystore(os.path.join(state_dir, "keystore.json"))
    path = os.path.join(state_dir, "vault")
    if create and not os.path.exists(path):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        return fv.Vault.init(path, ACCOUNT, keystore, IDLE_LOCK_SECS)
    vault = fv.Vault.open(path, ACCOUNT, IDLE_LOCK_SECS)
    vault.unlock(keystore)
    return vault


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vault", required=True, metavar="DIR", help="this app's state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in to a sync server (creates the vault when there is none)")
    login.add_argument("--server", required=True, metavar="URL")
    login.add_argument("--user", required=True, metavar="NAME")
    login.add_argument("--pin", required=True, action="append", metavar="PIN", help="sha256/BASE64; give the current and the next")
    add = sub.add_parser("add", help="write a note")
    add.add_argument("text")
    sub.add_parser("list", help="list the notes")
    sub.add_parser("sync", help="send and receive changes")
    args = parser.parse_args()

    try:
        vault = open_vault(args.vault, create=args.command == "login")
        try:
            if args.command == "login":
                password = os.environ.get("FIELDVAULT_PASSWORD")
                if not password:
                    sys.exit("field_notes: set FIELDVAULT_PASSWORD to the sync server's password")
                r = asyncio.run(vault.login(args.server, args.pin, args.user, password, "field-notes-python"))
                print(f"logged in as {r.user}, device {r.device_id}")
            elif args.command == "add":
                note_id = str(uuid.uuid4())
                vault.put("notes", note_id, json.dumps({"text": args.text, "at": int(time.time())}))
                print(f"added {note_id}")
            elif args.command == "list":
                after = None
                while True:
                    page = vault.list("notes", 100, after)
                    for doc in page.documents:
                        print(f"{doc.id}  {json.loads(doc.json).get('text', '')}")
                    if page.next is None:
                        break
                    after = page.next
            elif args.command == "sync":
                r = asyncio.run(vault.sync(None))
                print(f"sent {r.pushed}, received {r.pulled}, conflicts {r.conflicts}")
        finally:
            vault.close()
    except fv.FieldvaultError.Cancelled:
        sys.exit("field_notes: the keystore did not open (set FIELDVAULT_PASSPHRASE to the vault's passphrase)")
    except fv.FieldvaultError.NotFound:
        sys.exit(f"field_notes: no vault in {args.vault}; run `login` first")
    except fv.FieldvaultError.Offline:
        sys.exit("field_notes: the server cannot be reached; your notes stay here until the next sync")
    except fv.FieldvaultError.AuthRequired:
        sys.exit("field_notes: log in (again) first")
    except fv.FieldvaultError as e:
        sys.exit(f"field_notes: {type(e).__name__}")


if __name__ == "__main__":
    main()
