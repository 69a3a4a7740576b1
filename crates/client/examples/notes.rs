//! A small offline notes app on the public SDK: the lifecycle an app follows (open or create
//! the vault, unlock, write, log in, sync, look at conflicts, who am I, lock).
//!
//! ```text
//! export NOTES_PASSPHRASE='a long passphrase for the notes vault' NOTES_PASSWORD='...'
//! cargo run -p fieldvault-client --example notes -- DIR add "buy milk"
//! cargo run -p fieldvault-client --example notes -- DIR list
//! cargo run -p fieldvault-client --example notes -- DIR login https://127.0.0.1:8443 sha256/PIN alice
//! cargo run -p fieldvault-client --example notes -- DIR sync
//! cargo run -p fieldvault-client --example notes -- DIR conflicts
//! cargo run -p fieldvault-client --example notes -- DIR whoami
//! ```
//!
//! Writing and reading never wait for the network; `sync` pushes what was written offline
//! and pulls what changed elsewhere. The SDK is blocking: an app calls it from a thread of
//! its own, never from inside an async runtime.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use fieldvault_client::{ConflictPolicy, Error, LoginOptions, Unlocked, Vault};
use fieldvault_core::{AccountName, Passphrase};
use fieldvault_keystore::PassphraseStore;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// Notes keep the newest text, and a note edited on two devices keeps both texts.
fn merge_notes(local: &Map<String, Value>, server: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = server.clone();
    if local.get("text") != server.get("text") {
        let both = format!(
            "{}\n---\n{}",
            server.get("text").and_then(Value::as_str).unwrap_or(""),
            local.get("text").and_then(Value::as_str).unwrap_or("")
        );
        merged.insert("text".into(), json!(both));
    }
    merged
}

fn open(dir: &Path, account: &AccountName) -> Result<Unlocked, Box<dyn std::error::Error>> {
    let passphrase = std::env::var("NOTES_PASSPHRASE").map_err(|_| "set NOTES_PASSPHRASE")?;
    let store = PassphraseStore::new(Passphrase::new(Zeroizing::new(passphrase)));
    Ok(if dir.join("vault.fv").exists() {
        Vault::open(dir)?.unlock(&store)?
    } else {
        Vault::init(dir, &store, account)?
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, command, rest @ ..] = args.as_slice() else {
        return Err("usage: notes DIR (add TEXT | list | login URL PIN USER | sync | conflicts | whoami)".into());
    };
    let account = AccountName::new("default")?;
    let mut vault = open(Path::new(dir), &account)?;
    match (command.as_str(), rest) {
        ("add", [text]) => {
            let id = format!("n{}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis());
            let body = json!({ "text": text }).as_object().cloned().unwrap_or_default();
            vault.documents(&account)?.put("notes", &id, body)?;
            println!("added {id} (queued for the next sync)");
        }
        ("list", []) => {
            for note in vault.documents(&account)?.list("notes", None, None)?.documents {
                println!("{}: {}", note.id, note.body.get("text").and_then(Value::as_str).unwrap_or(""));
            }
        }
        ("login", [server, pin, user]) => {
            let password = std::env::var("NOTES_PASSWORD").map_err(|_| "set NOTES_PASSWORD")?;
            let pins = [pin.clone()];
            let who = vault.login(
                &account,
                LoginOptions {
                    server,
                    pins: &pins,
                    user,
                    password: Zeroizing::new(password),
                    device_name: "notes",
                    totp: None,
                },
            )?;
            println!("logged in as {} on device {}", who.user, who.device_id);
        }
        ("sync", []) => match vault.sync(&account, &|_| ConflictPolicy::Merge(merge_notes)) {
            Ok(r) => println!("pushed {}, pulled {}, conflicts {}", r.pushed, r.pulled, r.conflicts),
            // Offline is ordinary: the notes stay queued and the next sync sends them.
            Err(e) if e.is_transient() => println!("offline ({e}); your notes are kept and will sync later"),
            Err(Error::ReauthRequired(why)) => println!("log in again ({why}); nothing is lost"),
            Err(e) => return Err(e.into()),
        },
        ("conflicts", []) => {
            for c in vault.conflicts(&account)? {
                println!("{}/{} lost to server version {}: {:?}", c.collection, c.id, c.server_version, c.local);
            }
        }
        ("whoami", []) => {
            let me = vault.whoami(&account)?;
            println!("{} (roles: {}), offline token valid until {}", me.user, me.roles.join(", "), me.expires_at);
        }
        _ => return Err("unknown command".into()),
    }
    // Locking zeroizes every key; dropping the vault does the same.
    drop(vault.lock());
    Ok(())
}
