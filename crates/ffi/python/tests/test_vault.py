"""The vault through the Python bindings, on this machine."""

import asyncio
import json
import os

import pytest

import fieldvault as fv
from conftest import PromptingKeystore

PASSPHRASE = "marble quokka seventy umbrella python"


def test_a_python_keystore_that_refuses_once_then_allows(vault_dir):
    ks = PromptingKeystore()
    v = fv.Vault.init(vault_dir("v"), "default", ks, 600)
    v.put("notes", "n1", json.dumps({"text": "hello"}))
    v.close()
    v = fv.Vault.open(vault_dir("v"), "default", 600)
    ks.cancel_next = True
    with pytest.raises(fv.FieldvaultError.Cancelled):
        v.unlock(ks)
    v.unlock(ks)
    assert json.loads(v.get("notes", "n1").json) == {"text": "hello"}
    v.close()


def test_documents_put_get_list_in_pages_and_delete(vault_dir):
    v = fv.Vault.init_with_passphrase(vault_dir("v"), "default", PASSPHRASE, 600)
    for i in range(5):
        v.put("visits", f"v{i}", json.dumps({"i": i}))
    first = v.list("visits", 3, None)
    assert [d.id for d in first.documents] == ["v0", "v1", "v2"]
    rest = v.list("visits", 3, first.next)
    assert [d.id for d in rest.documents] == ["v3", "v4"] and rest.next is None
    assert v.delete("visits", "v0") is True
    assert v.get("visits", "v0") is None
    assert {o.id for o in v.outbox()} >= {"v1", "v2", "v3", "v4"}
    v.close()


def test_attachments_move_by_path_with_progress(vault_dir, tmp_path):
    v = fv.Vault.init_with_passphrase(vault_dir("v"), "default", PASSPHRASE, 600)
    v.put("visits", "v1", "{}")
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"\xff\xd8" + bytes(range(256)) * 1000)

    class Progress(fv.ProgressListener):
        def __init__(self):
            self.calls = []

        def progress(self, done, total):
            self.calls.append((done, total))

    p = Progress()
    a = v.attach("visits", "v1", str(src), p)
    assert a.size == src.stat().st_size and p.calls[-1] == (a.size, a.size)
    out = tmp_path / "back.jpg"
    v.attachment_get(a.id, str(out), None)
    assert out.read_bytes() == src.read_bytes()

    class Raises(fv.ProgressListener):
        def __init__(self):
            self.calls = 0

        def progress(self, done, total):
            self.calls += 1
            raise RuntimeError("the progress bar is gone")

    r = Raises()
    again = tmp_path / "again.jpg"
    v.attachment_get(a.id, str(again), r)
    assert again.read_bytes() == src.read_bytes() and r.calls == 1, "the transfer goes on without the listener"
    v.close()


def test_errors_arrive_as_typed_exceptions(vault_dir):
    v = fv.Vault.init_with_passphrase(vault_dir("v"), "default", PASSPHRASE, 600)
    with pytest.raises(fv.FieldvaultError.Invalid):
        v.put("notes", "n1", "[1, 2, 3]")
    with pytest.raises(fv.FieldvaultError.Invalid):
        v.put("notes", "n1", "not json")
    with pytest.raises(fv.FieldvaultError.NotFound):
        v.attach("notes", "missing", "/nonexistent", None)
    with pytest.raises(fv.FieldvaultError.AuthRequired):
        v.whoami()
    with pytest.raises(fv.FieldvaultError.AuthRequired):
        asyncio.run(v.sync(None))
    # The same vault from a second handle, while the first holds it.
    with pytest.raises(fv.FieldvaultError.InUse):
        fv.Vault.open(vault_dir("v"), "default", 600)
    v.close()
    second = fv.Vault.open(vault_dir("v"), "default", 600)
    with pytest.raises(fv.FieldvaultError.WrongPassphrase):
        second.unlock_with_passphrase("umbrella seventy quokka marble python")
    second.close()
    with pytest.raises(fv.FieldvaultError.Closed):
        second.get("notes", "n1")
    with pytest.raises(fv.FieldvaultError.NotFound):
        fv.Vault.open(vault_dir("nothing"), "default", 600)


def test_a_keystore_that_raises_something_else_is_a_typed_error(vault_dir):
    class Broken(PromptingKeystore):
        def load(self, entry):
            raise RuntimeError("the secure element is on fire")

    ks = Broken()
    fv.Vault.init(vault_dir("v"), "default", ks, 600).close()
    v = fv.Vault.open(vault_dir("v"), "default", 600)
    with pytest.raises(fv.FieldvaultError.KeyUnavailable):
        v.unlock(ks)


def test_a_non_utf8_path_is_refused_without_a_crash(vault_dir, tmp_path):
    v = fv.Vault.init_with_passphrase(vault_dir("v"), "default", PASSPHRASE, 600)
    v.put("visits", "v1", "{}")
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/photo-\xff.jpg")
    with pytest.raises((UnicodeEncodeError, fv.FieldvaultError)):
        v.attach("visits", "v1", path, None)
    with pytest.raises((UnicodeEncodeError, fv.FieldvaultError)):
        fv.Vault.open(path, "default", 600)
    assert v.get("visits", "v1") is not None, "the vault still works"
    v.close()


def test_a_keystore_prompt_that_never_returns_is_cancelled_after_the_timeout(vault_dir):
    import threading

    release = threading.Event()

    class Stuck(PromptingKeystore):
        def load(self, entry):
            release.wait()  # the prompt never comes back (until the test lets it go)
            return super().load(entry)

    ks = Stuck()
    fv.Vault.init(vault_dir("v"), "default", ks, 600).close()
    v = fv.Vault.open(vault_dir("v"), "default", 600)
    fv.set_keystore_timeout_secs(1)
    try:
        with pytest.raises(fv.FieldvaultError.Cancelled):
            v.unlock(ks)
    finally:
        fv.set_keystore_timeout_secs(120)
        release.set()
    v.unlock(ks)
    v.close()


def test_wipe_removes_the_vault_and_the_keystore_entry_and_closes(vault_dir):
    ks = PromptingKeystore()
    v = fv.Vault.init(vault_dir("v"), "default", ks, 600)
    v.put("notes", "n1", "{}")
    assert len(ks.entries) == 1
    v.wipe(ks)
    assert not os.path.exists(vault_dir("v")) or not os.listdir(vault_dir("v"))
    assert ks.entries == {}, "the keystore entry is deleted"
    with pytest.raises(fv.FieldvaultError.Closed):
        v.get("notes", "n1")
    with pytest.raises(fv.FieldvaultError.NotFound):
        fv.Vault.open(vault_dir("v"), "default", 600)


def test_the_idle_lock_locks_and_unlock_brings_the_keys_back(vault_dir):
    v = fv.Vault.init_with_passphrase(vault_dir("v"), "default", PASSPHRASE, 1)
    v.put("notes", "n1", "{}")
    import time

    deadline = time.monotonic() + 30
    while not v.is_locked() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert v.is_locked()
    with pytest.raises(fv.FieldvaultError.Locked):
        v.get("notes", "n1")
    assert v.status().locked
    v.unlock_with_passphrase(PASSPHRASE)
    assert v.get("notes", "n1") is not None
    v.close()
