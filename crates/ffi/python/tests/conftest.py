"""What every test of the Python bindings shares: an app keystore written in Python, and the
real server the Rust harness started (crates/ffi/tests/it/python.rs)."""

import os
import subprocess
import tempfile

import pytest

import fieldvault as fv


class PromptingKeystore(fv.Keystore):
    """An app keystore: holds each vault's secret, and refuses the next prompt when told to,
    as a cancelled biometric prompt would."""

    def __init__(self):
        self.entries = {}
        self.cancel_next = False

    def store(self, entry, secret):
        self.entries[entry] = bytes(secret)

    def load(self, entry):
        if self.cancel_next:
            self.cancel_next = False
            raise fv.KeystoreError.Cancelled()
        if entry not in self.entries:
            raise fv.KeystoreError.NotFound()
        return self.entries[entry]

    def delete(self, entry):
        self.entries.pop(entry, None)


class Server:
    def __init__(self):
        self.url = os.environ["FIELDVAULT_TEST_SERVER_URL"]
        self.pin = os.environ["FIELDVAULT_TEST_SERVER_PIN"]
        self.user = os.environ["FIELDVAULT_TEST_USER"]
        self.password = os.environ["FIELDVAULT_PASSWORD"]
        self.data = os.environ["FIELDVAULT_TEST_SERVER_DATA"]
        self.bin = os.environ["FIELDVAULT_TEST_SERVER_BIN"]

    def wipe_device(self, device_id):
        subprocess.run(
            [self.bin, "device", "wipe", device_id, "--data", self.data],
            check=True,
            capture_output=True,
        )


@pytest.fixture
def server():
    if "FIELDVAULT_TEST_SERVER_URL" not in os.environ:
        pytest.skip("no server: run through cargo test -p fieldvault-ffi --test it python")
    return Server()


@pytest.fixture
def vault_dir():
    with tempfile.TemporaryDirectory(dir=os.environ.get("FIELDVAULT_TEST_TMP")) as d:
        yield lambda name: os.path.join(d, name)
