"""Two devices against the real fieldvault-server on loopback, through the Python bindings."""

import asyncio
import json

import pytest

import fieldvault as fv
from conftest import PromptingKeystore


def device(server, path, name):
    ks = PromptingKeystore()
    v = fv.Vault.init(path, "default", ks, 600)
    login = asyncio.run(v.login(server.url, [server.pin], server.user, server.password, name))
    return v, login


class KeepBothTexts(fv.ConflictMerger):
    def merge(self, local_json, server_json):
        local, remote = json.loads(local_json), json.loads(server_json)
        merged = dict(remote)
        merged["text"] = remote["text"] + " | " + local["text"]
        return json.dumps(merged)


def test_two_devices_converge_merge_a_conflict_in_python_and_a_remote_wipe_is_wiped(server, vault_dir):
    one, _ = device(server, vault_dir("one"), "phone")
    two, login_two = device(server, vault_dir("two"), "tablet")
    assert one.whoami().user == server.user

    one.put("notes", "n1", json.dumps({"text": "first"}))
    assert asyncio.run(one.sync(None)).pushed == 1
    assert asyncio.run(two.sync(None)).pulled >= 1
    assert json.loads(two.get("notes", "n1").json)["text"] == "first"

    # Both edit n1; the phone's edit reaches the server first; the tablet merges in Python.
    one.put("notes", "n1", json.dumps({"text": "phone"}))
    two.put("notes", "n1", json.dumps({"text": "tablet"}))
    asyncio.run(one.sync(None))
    report = asyncio.run(two.sync(KeepBothTexts()))
    assert report.conflicts == 1 and report.merge_failures == 0
    assert json.loads(two.get("notes", "n1").json)["text"] == "phone | tablet"
    asyncio.run(two.sync(None))
    asyncio.run(one.sync(None))
    assert json.loads(one.get("notes", "n1").json)["text"] == "phone | tablet"
    assert two.status().outbox == 0

    # The operator wipes the tablet; it learns at its next contact.
    server.wipe_device(login_two.device_id)
    with pytest.raises(fv.FieldvaultError.Wiped):
        asyncio.run(two.sync(None))
    one.close()
    two.close()


def test_a_merger_that_raises_or_returns_garbage_loses_nothing(server, vault_dir):
    one, _ = device(server, vault_dir("one"), "phone")
    two, _ = device(server, vault_dir("two"), "tablet")
    one.put("drafts", "d1", json.dumps({"text": "a"}))
    asyncio.run(one.sync(None))
    asyncio.run(two.sync(None))

    class Raises(fv.ConflictMerger):
        def merge(self, local_json, server_json):
            raise ValueError("cannot merge")

    class Garbage(fv.ConflictMerger):
        def merge(self, local_json, server_json):
            return "[not an object"

    for merger, text in [(Raises(), "tablet 1"), (Garbage(), "tablet 2")]:
        one.put("drafts", "d1", json.dumps({"text": "phone"}))
        two.put("drafts", "d1", json.dumps({"text": text}))
        asyncio.run(one.sync(None))
        report = asyncio.run(two.sync(merger))
        assert report.merge_failures == 1
        assert json.loads(two.get("drafts", "d1").json)["text"] == text, "this device's version is kept"
        assert any(c.id == "d1" for c in two.conflicts()), "the server's version is kept to resolve"
        two.resolve_conflict("drafts", "d1", False)
        asyncio.run(two.sync(None))
        asyncio.run(one.sync(None))
    one.close()
    two.close()


def test_a_wrong_pin_is_tampered_and_sends_nothing(server, vault_dir):
    v = fv.Vault.init(vault_dir("v"), "default", PromptingKeystore(), 600)
    wrong = "sha256/" + "A" * 43 + "="
    with pytest.raises(fv.FieldvaultError.Tampered):
        asyncio.run(v.login(server.url, [wrong], server.user, server.password, "phone"))
    with pytest.raises(fv.FieldvaultError.AuthRequired):
        asyncio.run(v.login(server.url, [server.pin], server.user, "not the password", "phone"))
    v.close()
