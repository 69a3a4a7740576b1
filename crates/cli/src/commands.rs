//! One function per subcommand: call the library, print the result (text or `--json`).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use std::io::{IsTerminal, Read};

use fieldvault_client::{
    Document, ExportOptions, ExportTo, ImportKey, LogoutNotice, MAX_DOCUMENT_BYTES, RecoveryKey, Status, Unlocked,
    Vault, parse_body,
};
use fieldvault_core::{AccountName, KeystoreKind, KeystoreParams, SlotState};
use fieldvault_hygiene::core_dumps_disabled;
use fieldvault_keystore::{KeyStore, OsStore, PassphraseStore};
use serde_json::{Map, Value, json};

use crate::cli::{
    AccountCommand, AttachmentCommand, Cli, Command, ConflictsCommand, Global, KeepChoice, KeystoreChoice,
    RecoveryKeyCommand,
};
use crate::secret_input::{Prompt, Source, confirm, passphrase, password, recovery_key, totp_code};

pub fn run(cli: Cli) -> Result<()> {
    let g = &cli.global;
    let dir = vault_dir(g)?;
    match cli.command {
        Command::Init { keystore } => init(g, &dir, keystore),
        Command::Status { sync: false } => status(g, &dir),
        Command::Status { sync: true } => status_sync(g, &dir),
        Command::Put { collection, id, document } => put(g, &dir, &collection, &id, document.as_deref()),
        Command::Get { collection, id } => get(g, &dir, &collection, &id),
        Command::List { collection, limit, after } => list(g, &dir, &collection, limit, after.as_deref()),
        Command::Delete { collection, id } => delete(g, &dir, &collection, &id),
        Command::Rotate { master } => rotate(g, &dir, master),
        Command::Passwd { new_passphrase_fd } => passwd(g, &dir, new_passphrase_fd),
        Command::RecoveryKey(RecoveryKeyCommand::New) => recovery_key_new(g, &dir),
        Command::Recover { recovery_key_fd } => recover(g, &dir, recovery_key_fd),
        Command::Wipe { yes } => wipe(g, &dir, g.account.as_deref(), yes),
        Command::Verify => verify(g, &dir),
        Command::Migrate { from } => migrate(g, &dir, &from),
        Command::Attach { collection, id, file } => attach(g, &dir, &collection, &id, &file),
        Command::Export { out, collections, with_attachments, recipients, to_passphrase, export_passphrase_fd } => {
            let to = if to_passphrase {
                let from = Source {
                    fd: export_passphrase_fd,
                    flag: "--export-passphrase-fd",
                    env_var: "FIELDVAULT_EXPORT_PASSPHRASE",
                };
                ExportTo::Passphrase(passphrase(&from, "Export passphrase", Prompt::Confirm)?)
            } else {
                ExportTo::Recipients(recipients)
            };
            export(g, &dir, &out, ExportOptions { collections, with_attachments, to })
        }
        Command::Import { file, identity, from_passphrase: _, export_passphrase_fd } => {
            let key = match identity {
                Some(path) => ImportKey::Identities(
                    fieldvault_client::read_identities(std::io::BufReader::new(
                        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?,
                    ))
                    .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => {
                    let from = Source {
                        fd: export_passphrase_fd,
                        flag: "--export-passphrase-fd",
                        env_var: "FIELDVAULT_EXPORT_PASSPHRASE",
                    };
                    ImportKey::Passphrase(passphrase(&from, "Export passphrase", Prompt::Once)?)
                }
            };
            import(g, &dir, &file, key)
        }
        Command::Attachment(AttachmentCommand::Get { att_id, out }) => attachment_get(g, &dir, &att_id, &out),
        Command::Attachment(AttachmentCommand::List { collection, id }) => attachment_list(g, &dir, &collection, &id),
        Command::Attachment(AttachmentCommand::Delete { att_id }) => attachment_delete(g, &dir, &att_id),
        Command::Attachment(AttachmentCommand::Prefetch { collection, off }) => {
            attachment_prefetch(g, &dir, &collection, off)
        }
        Command::Login { server, user, oidc, no_browser, pins, device_name, password_fd, totp_fd } => {
            match (oidc, user) {
                (Some(issuer), _) => login_oidc(g, &dir, &server, &issuer, &pins, device_name.as_deref(), no_browser),
                (None, Some(user)) => {
                    login(g, &dir, &server, &user, &pins, device_name.as_deref(), password_fd, totp_fd)
                }
                (None, None) => bail!("login needs --user NAME or --oidc ISSUER_URL"),
            }
        }
        Command::Sync { watch: false, .. } => sync(g, &dir),
        Command::Sync { watch: true, interval } => sync_watch(g, &dir, interval),
        Command::Outbox => outbox(g, &dir),
        Command::Conflicts { action: None } => conflicts(g, &dir),
        Command::Conflicts { action: Some(ConflictsCommand::Resolve { collection, id, keep }) } => {
            resolve(g, &dir, &collection, &id, keep)
        }
        Command::Whoami => whoami(g, &dir),
        Command::Logout { keep_data, force, yes } => logout(g, &dir, keep_data, force, yes),
        Command::Account(AccountCommand::Add { name }) => account_add(g, &dir, &name),
        Command::Account(AccountCommand::List) => account_list(g, &dir),
    }
}

fn vault_dir(g: &Global) -> Result<PathBuf> {
    if let Some(v) = &g.vault {
        return Ok(v.clone());
    }
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("set --vault DIR (HOME is not set)"))?)
            .join(".local/share"),
    };
    Ok(base.join("fieldvault"))
}

fn account(g: &Global) -> Result<AccountName> {
    Ok(AccountName::new(g.account.as_deref().unwrap_or("default"))?)
}

/// Prints `value` as JSON with `--json`, else `text`. A standard output that cannot be
/// written (a closed pipe, a full disk) is an error like any other: one line on stderr.
fn emit(g: &Global, value: Value, text: impl FnOnce() -> String) -> Result<()> {
    let out = if g.json { serde_json::to_string_pretty(&value).expect("JSON values always serialize") } else { text() };
    print_line(out)
}

/// One JSON object on one line with `--json` (a stream of them, as `sync --watch` prints).
fn emit_line(g: &Global, value: Value, text: impl FnOnce() -> String) -> Result<()> {
    print_line(if g.json { value.to_string() } else { text() })
}

fn print_line(out: String) -> Result<()> {
    use std::io::Write;
    // An empty result prints nothing, not an empty line.
    if !out.is_empty() {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{out}").and_then(|()| stdout.flush()).context("cannot write to standard output")?;
    }
    Ok(())
}

fn passphrase_store(g: &Global, prompt: Prompt) -> Result<PassphraseStore> {
    let from = Source { fd: g.passphrase_fd, flag: "--passphrase-fd", env_var: "FIELDVAULT_PASSPHRASE" };
    Ok(PassphraseStore::new(passphrase(&from, "Passphrase", prompt)?))
}

/// The store that holds this vault's keystore key.
fn store_for(g: &Global, vault: &Vault) -> Result<Box<dyn KeyStore>> {
    Ok(match vault.keystore_kind() {
        KeystoreKind::Os => Box::new(OsStore::platform().context("this vault's key is in the OS keystore")?),
        KeystoreKind::Passphrase => Box::new(passphrase_store(g, Prompt::Once)?),
        KeystoreKind::Memory => {
            bail!("this vault uses the in-memory test keystore and cannot be opened from the command line")
        }
    })
}

fn open(dir: &Path) -> Result<Vault> {
    match Vault::open(dir) {
        // It names the directory and says what to do: no "cannot open" in front.
        Err(e @ fieldvault_client::Error::NotAVault { missing: true, .. }) => Err(e.into()),
        other => other.with_context(|| format!("cannot open the vault at {}", dir.display())),
    }
}

fn unlock(g: &Global, dir: &Path) -> Result<Unlocked> {
    let vault = open(dir)?;
    let store = store_for(g, &vault)?;
    Ok(vault.unlock(store.as_ref())?)
}

fn init(g: &Global, dir: &Path, choice: Option<KeystoreChoice>) -> Result<()> {
    let account = account(g)?;
    // Before any keystore note or passphrase prompt: an existing vault is refused at once.
    Vault::check_init_target(dir)?;
    let mut fallback = None;
    let store: Box<dyn KeyStore> = match choice {
        Some(KeystoreChoice::Os) => Box::new(OsStore::platform()?),
        Some(KeystoreChoice::Passphrase) => Box::new(passphrase_store(g, Prompt::Confirm)?),
        None => match OsStore::platform() {
            Ok(s) => Box::new(s),
            Err(why) => {
                eprintln!("fieldvault: {why}; using the passphrase keystore instead");
                fallback = Some(why.to_string());
                Box::new(passphrase_store(g, Prompt::Confirm)?)
            }
        },
    };
    let (vault, rk) = Vault::init_with_recovery_key(dir, store.as_ref(), &account)?;
    let st = vault.vault().status()?;
    let human = rk.to_human();
    emit(
        g,
        json!({ "created": true, "keystore_fallback": fallback, "recovery_key": human.as_str(), "status": status_json(dir, &st) }),
        || {
            format!(
                "created vault {} at {}\n{}\n{}",
                st.vault,
                dir.display(),
                status_text(dir, &st),
                recovery_text(&rk)
            )
        },
    )?;
    Ok(())
}

/// The recovery key as printed once, clearly labelled.
fn recovery_text(rk: &RecoveryKey) -> String {
    format!(
        "recovery key (shown only now; write it down and keep it away from this device: it opens the vault without \
         the passphrase or keystore entry):\n  {}",
        rk.to_human().as_str()
    )
}

fn recovery_key_new(g: &Global, dir: &Path) -> Result<()> {
    let mut v = unlock(g, dir)?;
    let rk = v.new_recovery_key()?;
    emit(g, json!({ "recovery_key": rk.to_human().as_str() }), || {
        format!("the previous recovery key no longer works\n{}", recovery_text(&rk))
    })?;
    Ok(())
}

fn recover(g: &Global, dir: &Path, fd: Option<u32>) -> Result<()> {
    let vault = open(dir)?;
    // A typo is caught by the checksum here, before anything is tried or counted.
    let rk = RecoveryKey::parse(&recovery_key(fd)?)?;
    let store: Box<dyn KeyStore> = match vault.keystore_kind() {
        KeystoreKind::Os => Box::new(OsStore::platform().context("this vault's key is in the OS keystore")?),
        KeystoreKind::Passphrase => {
            let from = Source { fd: None, flag: "--new-passphrase-fd", env_var: "FIELDVAULT_NEW_PASSPHRASE" };
            Box::new(PassphraseStore::new(passphrase(&from, "New passphrase", Prompt::Confirm)?))
        }
        KeystoreKind::Memory => {
            bail!("this vault uses the in-memory test keystore and cannot be opened from the command line")
        }
    };
    let (_unlocked, fresh) = vault.recover(&rk, store.as_ref())?;
    emit(g, json!({ "recovery_key": fresh.to_human().as_str() }), || {
        format!(
            "recovered: the vault opens with its new keystore key, and the used recovery key no longer works\n{}",
            recovery_text(&fresh)
        )
    })?;
    Ok(())
}

fn status(g: &Global, dir: &Path) -> Result<()> {
    let st = open(dir)?.status()?;
    emit(g, status_json(dir, &st), || status_text(dir, &st))?;
    Ok(())
}

fn keystore_desc(k: &KeystoreParams) -> (Value, String) {
    match k {
        KeystoreParams::Passphrase { kdf, .. } => (
            json!({ "kind": "passphrase", "kdf": { "algorithm": "argon2id", "m_cost_kib": kdf.m_cost_kib, "t_cost": kdf.t_cost, "p_cost": kdf.p_cost } }),
            format!(
                "passphrase (Argon2id, {} MiB, {} passes, {} lane(s))",
                kdf.m_cost_kib / 1024,
                kdf.t_cost,
                kdf.p_cost
            ),
        ),
        other => (json!({ "kind": other.kind().name() }), other.kind().name().to_owned()),
    }
}

fn state_name(s: SlotState) -> &'static str {
    match s {
        SlotState::Live => "live",
        SlotState::Pending => "pending",
    }
}

fn status_json(dir: &Path, st: &Status) -> Value {
    let mut accounts: Vec<Value> = Vec::new();
    let mut names: Vec<&AccountName> = st.keys.iter().map(|k| &k.account).collect();
    names.dedup();
    for name in names {
        let keys: Vec<Value> = st
            .keys
            .iter()
            .filter(|k| &k.account == name)
            .map(|k| json!({ "purpose": k.meta.purpose.name(), "key_id": k.meta.key_id.to_hex(), "version": k.meta.version, "state": state_name(k.state) }))
            .collect();
        accounts.push(json!({ "name": name.as_str(), "keys": keys }));
    }
    json!({
        "vault": { "path": dir.display().to_string(), "id": st.vault.to_hex() },
        "keystore": keystore_desc(&st.keystore).0,
        "locked": true,
        "failed_unlocks": st.failed_unlocks,
        "generation": st.generation,
        "master": { "key_id": st.master.key_id.to_hex(), "version": st.master.version },
        "accounts": accounts,
        "recovery_key": st.recovery.as_ref().map(|r| json!({ "id": r.id.to_hex(), "created_at": r.created_at })),
        "process": { "core_dumps_disabled": core_dumps_disabled() },
    })
}

fn status_text(dir: &Path, st: &Status) -> String {
    let mut out = format!(
        "vault     {} (id {})\nkeystore  {}\nunlocks   {} failed since the last success\nmaster    v{}  {}\n",
        dir.display(),
        st.vault,
        keystore_desc(&st.keystore).1,
        st.failed_unlocks,
        st.master.version,
        st.master.key_id
    );
    out.push_str(&match &st.recovery {
        Some(r) => format!("recovery  {}  made at {} (Unix time)\n", r.id, r.created_at),
        None => "recovery  none (`fieldvault recovery-key new` makes one)\n".to_owned(),
    });
    let mut last = None;
    for k in &st.keys {
        if last != Some(&k.account) {
            out.push_str(&format!("account   {}\n", k.account));
            last = Some(&k.account);
        }
        out.push_str(&format!(
            "  {:<9} v{}  {}  {}\n",
            k.meta.purpose.name(),
            k.meta.version,
            k.meta.key_id,
            state_name(k.state)
        ));
    }
    out.push_str(if core_dumps_disabled() {
        "process   core dumps disabled"
    } else {
        "process   WARNING: core dumps are possible"
    });
    out
}

fn rotate(g: &Global, dir: &Path, master: bool) -> Result<()> {
    let mut v = unlock(g, dir)?;
    let rotated: Vec<(String, u32)> = if master {
        let m = v.rotate_master()?;
        vec![("master".into(), m.version)]
    } else {
        let account = account(g)?;
        // One call re-keys the database and re-wraps attachment keys: no count to show.
        let spin = spinner(g, "re-keying the database");
        let rotated = v.rotate_keys(&account);
        spin.finish_and_clear();
        rotated?.into_iter().map(|m| (format!("{account}/{}", m.purpose), m.version)).collect()
    };
    let list: Vec<Value> = rotated.iter().map(|(k, ver)| json!({ "key": k, "version": ver })).collect();
    emit(g, json!({ "rotated": list }), || {
        rotated.iter().map(|(k, ver)| format!("rotated {k} key: now v{ver}")).collect::<Vec<_>>().join("\n")
    })?;
    Ok(())
}

fn passwd(g: &Global, dir: &Path, new_fd: Option<u32>) -> Result<()> {
    let vault = open(dir)?;
    if vault.keystore_kind() != KeystoreKind::Passphrase {
        bail!("this vault's key is in the {} keystore, not behind a passphrase", vault.keystore_kind().name());
    }
    let mut v = vault.unlock(&passphrase_store(g, Prompt::Once)?)?;
    let from = Source { fd: new_fd, flag: "--new-passphrase-fd", env_var: "FIELDVAULT_NEW_PASSPHRASE" };
    let new = passphrase(&from, "New passphrase", Prompt::Confirm)?;
    v.change_passphrase(&PassphraseStore::new(new))?;
    emit(g, json!({ "passphrase_changed": true }), || "passphrase changed".into())?;
    Ok(())
}

fn wipe(g: &Global, dir: &Path, account: Option<&str>, yes: bool) -> Result<()> {
    // What a wipe destroys is never left to an exported variable: with FIELDVAULT_ACCOUNT
    // set, `wipe` would wipe one account where it says the whole vault, or (unset) the
    // reverse. Only `--account` on the command line picks an account.
    if let (Some(name), true) = (account, g.account_from_env) {
        bail!(
            "FIELDVAULT_ACCOUNT is set ({name}); name the account on the command line (--account {name}) to wipe \
             it, or unset FIELDVAULT_ACCOUNT to wipe the whole vault; nothing was changed"
        );
    }
    if let Some(name) = account {
        let account = AccountName::new(name)?;
        let mut vault = open(dir)?;
        if !yes && !confirm(&format!("wipe account '{account}' and all its data"))? {
            bail!("not confirmed; nothing was changed");
        }
        vault.wipe_account(&account)?;
        let remaining = vault.accounts();
        let left: Vec<&str> = remaining.iter().map(AccountName::as_str).collect();
        emit(g, json!({ "wiped": { "account": account.as_str() }, "accounts_left": left }), || {
            if left.is_empty() {
                format!(
                    "wiped account '{account}'; the vault has no account now: `fieldvault account add NAME` makes a new one"
                )
            } else {
                format!("wiped account '{account}'")
            }
        })?;
        return Ok(());
    }
    if !yes && !confirm(&format!("wipe the vault at {} and everything in it", dir.display()))? {
        bail!("not confirmed; nothing was changed");
    }
    let kind = Vault::open(dir).map(|v| v.keystore_kind()).ok();
    let os = match kind {
        Some(KeystoreKind::Passphrase) => None,
        _ => OsStore::platform().ok(),
    };
    let report = Vault::wipe(dir, os.as_ref().map(|s| s as &dyn KeyStore))?;
    if !report.keystore_entry_removed {
        eprintln!(
            "fieldvault: note: the OS keystore entry could not be removed; it holds a key that opens nothing now"
        );
    }
    let id = report.vault.map(|v| v.to_hex());
    emit(g, json!({ "wiped": { "vault": id, "keystore_entry_removed": report.keystore_entry_removed } }), || {
        format!("wiped vault {}", id.unwrap_or_else(|| dir.display().to_string()))
    })?;
    Ok(())
}

fn verify(g: &Global, dir: &Path) -> Result<()> {
    let mut v = unlock(g, dir)?;
    let bar = progress_bar(g, "verifying", "attachments");
    let report = v.verify_with_progress(&mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let findings: Vec<Value> =
        report.findings.iter().map(|f| json!({ "path": f.path.display().to_string(), "problem": f.problem })).collect();
    emit(g, json!({ "ok": report.findings.is_empty(), "findings": findings, "checked": report.checked }), || {
        let mut s: String = report.checked.iter().map(|c| format!("ok    {c}\n")).collect();
        for f in &report.findings {
            s.push_str(&format!("FAIL  {}: {}\n", f.path.display(), f.problem));
        }
        s.push_str(&format!("verify: {} finding(s)", report.findings.len()));
        s
    })?;
    if !report.findings.is_empty() {
        bail!("verify found {} problem(s)", report.findings.len());
    }
    Ok(())
}

fn doc_json(d: &Document) -> Value {
    json!({ "collection": d.collection, "id": d.id, "version": d.version, "updated_at_ms": d.updated_at_ms, "body": d.body })
}

fn read_body(arg: Option<&str>) -> Result<Map<String, Value>> {
    let text = match arg {
        Some(t) if t != "-" => t.to_owned(),
        _ => {
            let mut buf = String::new();
            // One byte past the limit is enough to say "too large" without reading 100 MB.
            std::io::stdin()
                .take(MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_string(&mut buf)
                .context("cannot read the document from stdin")?;
            buf
        }
    };
    Ok(parse_body(&text)?)
}

fn put(g: &Global, dir: &Path, collection: &str, id: &str, json_arg: Option<&str>) -> Result<()> {
    let body = read_body(json_arg)?;
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let d = v.documents(&account)?.put(collection, id, body)?;
    emit(g, doc_json(&d), || format!("{}/{} v{}", d.collection, d.id, d.version))?;
    Ok(())
}

fn get(g: &Global, dir: &Path, collection: &str, id: &str) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let d = v.documents(&account)?.get(collection, id)?.ok_or_else(|| anyhow!("no document {id:?} in {collection}"))?;
    emit(g, doc_json(&d), || serde_json::to_string_pretty(&d.body).expect("JSON values always serialize"))?;
    Ok(())
}

fn list(g: &Global, dir: &Path, collection: &str, limit: Option<NonZeroUsize>, after: Option<&str>) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let page = v.documents(&account)?.list(collection, limit, after)?;
    let docs: Vec<Value> = page.documents.iter().map(doc_json).collect();
    emit(g, json!({ "documents": docs, "next": page.next }), || {
        let mut s: Vec<String> = page
            .documents
            .iter()
            .map(|d| format!("{}\tv{}\t{}", d.id, d.version, Value::Object(d.body.clone())))
            .collect();
        if let Some(n) = &page.next {
            s.push(format!("(more: --after {n})"));
        }
        s.join("\n")
    })?;
    Ok(())
}

fn delete(g: &Global, dir: &Path, collection: &str, id: &str) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    if !v.documents(&account)?.delete(collection, id)? {
        bail!("no document {id:?} in {collection}");
    }
    emit(g, json!({ "deleted": { "collection": collection, "id": id } }), || format!("deleted {collection}/{id}"))?;
    Ok(())
}

/// A progress bar counting `unit`s on a terminal; hidden in `--json` mode or when stderr
/// is not a terminal.
fn progress_bar(g: &Global, what: &str, unit: &str) -> indicatif::ProgressBar {
    styled_bar(g, what, &format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{eta}})"))
}

/// A progress bar counting bytes, hidden like [`progress_bar`].
fn bytes_bar(g: &Global, what: &str) -> indicatif::ProgressBar {
    styled_bar(g, what, "{msg} [{bar:40}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})")
}

fn styled_bar(g: &Global, what: &str, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if g.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar.set_message(what.to_owned());
    bar
}

fn migrate(g: &Global, dir: &Path, from: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let bar = progress_bar(g, "importing", "rows");
    let m = v.migrate_from(&account, from, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let total: u64 = m.collections.values().sum();
    let kept: Vec<Value> =
        m.kept_as_text.iter().map(|k| json!({ "collection": k.collection, "id": k.id, "column": k.column })).collect();
    emit(
        g,
        json!({ "imported": m.collections, "not_imported": m.not_imported, "kept_as_text": kept,
            "removed": from.display().to_string() }),
        || {
            let mut s: Vec<String> = m.collections.iter().map(|(c, n)| format!("imported {n} rows into {c}")).collect();
            s.extend(m.not_imported.iter().map(|o| format!("not imported (holds no rows): {o}")));
            s.extend(m.kept_as_text.iter().map(|k| {
                format!(
                    "kept as text (a JSON object that parsing would change): {}/{} column {}",
                    k.collection, k.id, k.column
                )
            }));
            s.push(format!("{total} rows imported; removed {}", from.display()));
            s.join("\n")
        },
    )?;
    Ok(())
}

/// A spinner on a terminal for work without a known length; hidden like [`progress_bar`].
fn spinner(g: &Global, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if g.json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let s = indicatif::ProgressBar::new_spinner();
    s.set_message(what.to_owned());
    s.enable_steady_tick(std::time::Duration::from_millis(100));
    s
}

fn export(g: &Global, dir: &Path, out: &Path, options: ExportOptions) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let name = out.file_name().ok_or_else(|| anyhow!("--out {} names no file", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if out.is_dir() {
        bail!("--out {} is a directory", out.display());
    }
    // Written beside FILE and renamed into place only when complete: FILE is never
    // half-written (a killed export leaves only this hidden file).
    let tmp = parent.join(format!(".{}.{}.partial", name.to_string_lossy(), std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    struct Remove<'a>(&'a Path, bool);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            if !self.1 {
                let _ = std::fs::remove_file(self.0);
            }
        }
    }
    let mut guard = Remove(&tmp, false);
    let bar = bytes_bar(g, "exporting");
    let r = v.export(&account, options, &file, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let r = r.with_context(|| format!("export to {} failed; nothing was written there", out.display()))?;
    file.sync_all().with_context(|| format!("export to {} failed; nothing was written there", out.display()))?;
    drop(file);
    std::fs::rename(&tmp, out).with_context(|| format!("cannot rename the export into place at {}", out.display()))?;
    guard.1 = true;
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    let collections: serde_json::Map<String, Value> =
        r.collections.iter().map(|(c, n)| (c.clone(), json!(n))).collect();
    emit(
        g,
        json!({ "out": out.display().to_string(), "collections": collections, "documents": r.documents,
                "attachments": r.attachments, "attachments_not_here": r.attachments_not_here, "bytes": r.bytes }),
        || {
            let mut s =
                format!("exported {} documents and {} attachments to {}", r.documents, r.attachments, out.display());
            if r.attachments_not_here > 0 {
                s.push_str(&format!(
                    "\nleft out {} attachments whose bytes are not on this device (get them first)",
                    r.attachments_not_here
                ));
            }
            s
        },
    )?;
    Ok(())
}

fn import(g: &Global, dir: &Path, file: &Path, key: ImportKey) -> Result<()> {
    let account = account(g)?;
    let input = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut v = unlock(g, dir)?;
    let bar = bytes_bar(g, "importing");
    let r = v.import(&account, input, key, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let r = r?;
    let refs = |l: &[fieldvault_client::DocRef]| -> Vec<Value> {
        l.iter().map(|d| json!({ "collection": d.collection, "id": d.id })).collect()
    };
    emit(
        g,
        json!({ "added": r.added, "skipped": refs(&r.skipped), "conflicting": refs(&r.conflicting),
                "attachments_added": r.attachments_added, "attachments_skipped": r.attachments_skipped }),
        || {
            let mut s = vec![format!(
                "added {} documents and {} attachments; {} documents skipped (already here, the same); {} conflicting (already here, different: kept as they are here)",
                r.added,
                r.attachments_added,
                r.skipped.len(),
                r.conflicting.len()
            )];
            s.extend(r.conflicting.iter().map(|d| format!("conflicting: {}/{}", d.collection, d.id)));
            s.join("\n")
        },
    )?;
    Ok(())
}

fn attachment_json(a: &fieldvault_client::Attachment) -> Value {
    json!({ "id": a.id, "collection": a.collection, "document": a.document, "size": a.size,
            "key_version": a.key_version, "root": a.root, "created_at_ms": a.created_at_ms,
            "downloaded": a.downloaded, "upload_pending": a.upload_pending })
}

fn attach(g: &Global, dir: &Path, collection: &str, id: &str, file: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let bar = bytes_bar(g, "encrypting");
    let a = v.attach_with_progress(&account, collection, id, file, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let a = a?;
    emit(g, attachment_json(&a), || a.id.clone())?;
    Ok(())
}

fn attachment_get(g: &Global, dir: &Path, att_id: &str, out: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let bar = bytes_bar(g, "decrypting");
    let a = v.attachment_get_with_progress(&account, att_id, out, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let a = a?;
    emit(g, json!({ "attachment": attachment_json(&a), "out": out.display().to_string() }), || {
        format!("wrote {} bytes to {}", a.size, out.display())
    })?;
    Ok(())
}

fn attachment_list(g: &Global, dir: &Path, collection: &str, id: &str) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let list = v.attachments_of(&account, collection, id)?;
    emit(g, json!({ "attachments": list.iter().map(attachment_json).collect::<Vec<_>>() }), || {
        let line = |a: &fieldvault_client::Attachment| {
            let mut notes = Vec::new();
            if !a.downloaded {
                notes.push("not downloaded");
            }
            if a.upload_pending {
                notes.push("upload pending");
            }
            let notes = if notes.is_empty() { String::new() } else { format!("\t({})", notes.join(", ")) };
            format!("{}\t{} bytes{notes}", a.id, a.size)
        };
        list.iter().map(line).collect::<Vec<_>>().join("\n")
    })?;
    Ok(())
}

fn attachment_delete(g: &Global, dir: &Path, att_id: &str) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let a = v.attachment_delete(&account, att_id)?;
    emit(g, json!({ "deleted": attachment_json(&a) }), || format!("deleted {}", a.id))?;
    Ok(())
}

fn attachment_prefetch(g: &Global, dir: &Path, collection: &str, off: bool) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    v.set_prefetch(&account, collection, !off)?;
    emit(g, json!({ "collection": collection, "prefetch": !off }), || {
        if off {
            format!("{collection}: attachments download when asked for")
        } else {
            format!("{collection}: every sync downloads its attachments")
        }
    })?;
    Ok(())
}

// One argument per option of `login`, as the other commands take theirs.
#[allow(clippy::too_many_arguments)]
fn login(
    g: &Global,
    dir: &Path,
    server: &str,
    user: &str,
    pins: &[String],
    device_name: Option<&str>,
    password_fd: Option<u32>,
    totp_fd: Option<u32>,
) -> Result<()> {
    let account = account(g)?;
    warn_single_pin(pins);
    let password = password(&Source { fd: password_fd, flag: "--password-fd", env_var: "FIELDVAULT_PASSWORD" })?;
    let mut v = unlock(g, dir)?;
    let name = device_label(device_name);
    let totp = totp_fd.map(|fd| totp_code(Some(fd))).transpose()?;
    let options =
        |password, totp| fieldvault_client::LoginOptions { server, pins, user, password, device_name: &name, totp };
    let s = match v.login(&account, options(password.clone(), totp)) {
        // A user enrolled in multi-factor login: ask for the code on a terminal and try once
        // more (the refused login changed nothing).
        Err(fieldvault_client::Error::MfaRequired) if totp_fd.is_none() => {
            if !std::io::stdin().is_terminal() {
                bail!("this user logs in with a TOTP code: pass it with --totp-fd N");
            }
            v.login(&account, options(password, Some(totp_code(None)?)))?
        }
        other => other?,
    };
    print_login(g, &s)
}

/// How long `login --oidc` waits for the browser to come back.
const OIDC_WAIT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

fn login_oidc(
    g: &Global,
    dir: &Path,
    server: &str,
    issuer: &str,
    pins: &[String],
    device_name: Option<&str>,
    no_browser: bool,
) -> Result<()> {
    let account = account(g)?;
    warn_single_pin(pins);
    let mut v = unlock(g, dir)?;
    let name = device_label(device_name);
    let opts = fieldvault_client::OidcLoginOptions { server, pins, issuer, device_name: &name, redirect_uri: None };
    let sign_in = v.begin_oidc_login(&account, opts)?;
    // The address on a line of its own: a person copies it, a test reads it.
    eprintln!("Open this address in a browser to sign in:");
    eprintln!("{}", sign_in.url());
    if !no_browser && let Err(why) = open_browser(sign_in.url()) {
        eprintln!("fieldvault: note: no browser was opened ({why}); open the address yourself");
    }
    eprintln!("Waiting up to {} minutes for the sign-in to finish in the browser...", OIDC_WAIT.as_secs() / 60);
    let s = v.finish_oidc_login(&account, sign_in, OIDC_WAIT)?;
    print_login(g, &s)
}

/// Opens `url` in the user's browser (see [`browser_command`]); the browser is not waited
/// for.
fn open_browser(url: &str) -> std::result::Result<(), String> {
    let desktop = ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let words = browser_command(std::env::var("BROWSER").ok().as_deref(), desktop, url)
        .ok_or("no $BROWSER and no desktop display")?;
    let mut child = std::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", words[0]))?;
    // Reaped when it exits; the sign-in does not wait for it.
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// The command that opens `url`: `$BROWSER`'s first entry (`:` separates entries; `%s`
/// stands for the address, else it is the last argument; no shell is involved), else
/// `xdg-open` on a desktop, else none.
fn browser_command(browser: Option<&str>, desktop: bool, url: &str) -> Option<Vec<String>> {
    let first = browser.and_then(|b| b.split(':').next()).map(str::trim).filter(|b| !b.is_empty());
    let mut words: Vec<String> = match first {
        Some(b) => b.split_whitespace().map(str::to_owned).collect(),
        None if desktop => vec!["xdg-open".to_owned()],
        None => return None,
    };
    if words.iter().any(|w| w.contains("%s")) {
        words.iter_mut().for_each(|w| *w = w.replace("%s", url));
    } else {
        words.push(url.to_owned());
    }
    Some(words)
}

fn warn_single_pin(pins: &[String]) {
    if pins.len() == 1 {
        eprintln!(
            "warning: only one pin given; pass the next key's pin too (--pin), or a key rotation will lock this device out"
        );
    }
}

/// The device's label: as given, else the host name.
fn device_label(device_name: Option<&str>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "fieldvault".to_owned(), |h| h.trim().to_owned());
    device_name.map_or(host, str::to_owned)
}

/// What a login prints, whatever the credential.
fn print_login(g: &Global, s: &fieldvault_client::LoginSummary) -> Result<()> {
    emit(
        g,
        json!({ "user": s.user, "device_id": s.device_id, "continued": s.continued,
                "device_reason": s.device_reason, "lease_expires_at": s.lease_expires_at, "wiped": s.wiped }),
        || {
            let how = if s.continued { "continued device" } else { "new device" };
            let wiped = if s.wiped { "; the server had ordered this device wiped: its data was destroyed" } else { "" };
            format!("logged in as {} ({how} {}){wiped}", s.user, s.device_id)
        },
    )
}

fn sync(g: &Global, dir: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let bar = spinner(g, "syncing");
    let r = v.sync_with_progress(&account, &|_| fieldvault_client::ConflictPolicy::ServerWins, &mut |r, more| {
        let more = if more { ", more to come" } else { "" };
        bar.set_message(format!("syncing: pushed {}, pulled {}{more}", r.pushed, r.pulled));
    });
    bar.finish_and_clear();
    let r = r?;
    emit(g, sync_report_json(&r), || {
        let a = &r.attachments;
        let mut line = format!(
            "pushed {}, pulled {}, conflicts {}, refused {}, held {}",
            r.pushed, r.pulled, r.conflicts, r.rejected, r.held
        );
        if a.uploaded + a.upload_refused + a.keyed + a.downloaded > 0 {
            line += &format!(
                "; attachments: uploaded {}, refused {}, new {}, downloaded {}",
                a.uploaded, a.upload_refused, a.keyed, a.downloaded
            );
        }
        line
    })
}

fn sync_report_json(r: &fieldvault_client::SyncReport) -> Value {
    let a = &r.attachments;
    json!({ "pushed": r.pushed, "conflicts": r.conflicts, "rejected": r.rejected, "held": r.held,
            "pulled": r.pulled, "skipped": r.skipped,
            "attachments": { "uploaded": a.uploaded, "upload_refused": a.upload_refused, "keyed": a.keyed,
                             "downloaded": a.downloaded } })
}

/// `sync --watch`: a cycle every `interval` seconds; the vault is held only while a cycle
/// runs (parked in between, keys in this process's memory); failures that the network or the
/// server cause are retried with backoff, anything else stops with exit 1.
fn sync_watch(g: &Global, dir: &Path, interval: u64) -> Result<()> {
    let account = account(g)?;
    let mut first = unlock(g, dir)?;
    let target = first.sync_target(&account)?;
    let mut parked = Some(first.park());
    let mut failures = 0u32;
    loop {
        let Some(p) = parked.take() else { bail!("the vault could not be parked") };
        let mut v = match p.resume() {
            Ok(v) => v,
            Err(fieldvault_client::Error::Locked) => {
                bail!("the vault's keys changed while syncing (a rotation, a new passphrase or a wipe); run sync again")
            }
            Err(e) => return Err(e.into()),
        };
        let result = v.sync(&account, &|_| fieldvault_client::ConflictPolicy::ServerWins);
        parked = Some(v.park());
        let wait = match &result {
            Ok(r) => {
                failures = 0;
                let line = json!({ "ok": true, "report": sync_report_json(r) });
                emit_line(g, line, || {
                    format!(
                        "synced: pushed {}, pulled {}, conflicts {}, refused {}",
                        r.pushed, r.pulled, r.conflicts, r.rejected
                    )
                })?;
                std::time::Duration::from_secs(interval)
            }
            Err(e) if e.is_transient() => {
                failures = failures.saturating_add(1);
                let random = u32::from_le_bytes(rand4());
                let wait = fieldvault_client::retry_delay(failures, random)
                    .min(std::time::Duration::from_secs(interval.max(5)) * 15);
                let line = json!({ "ok": false, "error": e.to_string(), "retry_in_ms": wait.as_millis() as u64 });
                emit_line(g, line, || format!("sync failed: {e}; retrying in {} s", wait.as_secs()))?;
                wait
            }
            Err(_) => return result.map(|_| ()).map_err(Into::into),
        };
        // Offline: a cheap probe every few seconds starts the next cycle as soon as the server
        // answers again, rather than at the end of the backoff. A server that answers but
        // failed is not probed: it gets the whole backoff.
        let offline = matches!(
            &result,
            Err(fieldvault_client::Error::ServerUnreachable { .. }
                | fieldvault_client::Error::TimedOut { .. }
                | fieldvault_client::Error::ConnectionLost(_))
        );
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            let step =
                until.saturating_duration_since(std::time::Instant::now()).min(std::time::Duration::from_secs(5));
            std::thread::sleep(step);
            if offline
                && let Some(t) = &target
                && fieldvault_client::probe(t).is_ok()
            {
                break;
            }
        }
    }
}

fn rand4() -> [u8; 4] {
    let mut b = [0u8; 4];
    // The jitter only spreads retries out; a failed random source leaves it at zero.
    let _ = getrandom4(&mut b);
    b
}

fn getrandom4(b: &mut [u8; 4]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

fn outbox(g: &Global, dir: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let entries = v.outbox(&account)?;
    let json = entries
        .iter()
        .map(|e| json!({ "collection": e.collection, "id": e.id, "op": e.op, "queued_at_ms": e.queued_at_ms, "attempts": e.attempts }))
        .collect::<Vec<_>>();
    emit(g, Value::Array(json), || {
        entries
            .iter()
            .map(|e| format!("{} {}/{} (attempts {})", e.op, e.collection, e.id, e.attempts))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn whoami(g: &Global, dir: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let me = v.whoami(&account)?;
    emit(
        g,
        json!({ "user": me.user, "roles": me.roles, "device_id": me.device_id, "expires_at": me.expires_at }),
        || {
            format!(
                "{} (roles: {}; device {}; offline token valid until {})",
                me.user,
                me.roles.join(", "),
                me.device_id,
                me.expires_at
            )
        },
    )
}

fn conflicts(g: &Global, dir: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let list = v.conflicts(&account)?;
    let json = list
        .iter()
        .map(|c| {
            json!({ "collection": c.collection, "id": c.id, "local": c.local, "server_version": c.server_version,
                    "at_ms": c.at_ms })
        })
        .collect::<Vec<_>>();
    emit(g, Value::Array(json), || {
        list.iter()
            .map(|c| format!("{}/{} (server version {})", c.collection, c.id, c.server_version))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn resolve(g: &Global, dir: &Path, collection: &str, id: &str, keep: KeepChoice) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let keep_lib = match keep {
        KeepChoice::Local => fieldvault_client::Keep::Local,
        KeepChoice::Server => fieldvault_client::Keep::Server,
    };
    match v.resolve_conflict(&account, collection, id, keep_lib) {
        Err(fieldvault_client::Error::NoSuchDocument { .. }) => bail!("no conflict is kept for {collection}/{id}"),
        other => other?,
    }
    let kept = match keep {
        KeepChoice::Local => "local",
        KeepChoice::Server => "server",
    };
    emit(g, json!({ "collection": collection, "id": id, "kept": kept }), || {
        format!("{collection}/{id}: kept the {kept} version")
    })
}

fn logout(g: &Global, dir: &Path, keep_data: bool, force: bool, yes: bool) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let what = if keep_data {
        format!("log account '{account}' out (its data stays on this device)")
    } else {
        format!("log account '{account}' out and destroy its data on this device")
    };
    if !yes && !confirm(&what)? {
        bail!("not confirmed; nothing was changed");
    }
    let notice = v.logout(&account, keep_data, force)?;
    match &notice {
        LogoutNotice::Delivered => {}
        LogoutNotice::Owed(why) => eprintln!(
            "fieldvault: note: the server could not be told yet ({why}); the logout is recorded and told on the next `sync` or `login`"
        ),
        LogoutNotice::Dropped(why) => eprintln!(
            "fieldvault: note: the server had already ended this session ({why}); the device stays registered there until an operator runs `fieldvault-server device wipe` for it"
        ),
    }
    let owed = matches!(notice, LogoutNotice::Owed(_));
    emit(
        g,
        json!({ "logged_out": true, "kept_data": keep_data, "server_told": notice.delivered(), "owed": owed }),
        || {
            if keep_data {
                "logged out; data kept".into()
            } else {
                "logged out; the account's data is destroyed".into()
            }
        },
    )
}

fn account_add(g: &Global, dir: &Path, name: &str) -> Result<()> {
    let account = AccountName::new(name)?;
    let mut v = unlock(g, dir)?;
    v.add_account(&account)?;
    emit(g, json!({ "added": account.as_str() }), || format!("added account '{account}'"))
}

fn account_list(g: &Global, dir: &Path) -> Result<()> {
    let vault = open(dir)?;
    let names: Vec<String> = vault.accounts().iter().map(|a| a.as_str().to_owned()).collect();
    emit(g, json!(names), || names.join("\n"))
}

fn status_sync(g: &Global, dir: &Path) -> Result<()> {
    let account = account(g)?;
    let mut v = unlock(g, dir)?;
    let st = v.vault().status()?;
    let s = v.sync_status(&account)?;
    let owed = v.owed_logouts()?;
    let json = json!({
        "status": status_json(dir, &st),
        "sync": {
            "account": account.as_str(), "server": s.server, "user": s.user, "device_id": s.device_id,
            "online": s.online, "outbox": s.outbox, "conflicts": s.conflicts, "last_sync_ms": s.last_sync_ms,
            "access_expires_at": s.access_expires_at, "lease_expires_at": s.lease_expires_at,
            "logouts_owed": owed.len(),
        }
    });
    emit(g, json, || {
        format!(
            "{}\nsync ({account}): server {}, user {}, device {}\n  outbox {}, conflicts {}, last sync {}, access token until {}, lease until {}",
            status_text(dir, &st),
            s.server.as_deref().unwrap_or("none (not logged in)"),
            s.user.as_deref().unwrap_or("-"),
            s.device_id.as_deref().unwrap_or("-"),
            s.outbox,
            s.conflicts,
            s.last_sync_ms.map_or("never".into(), |t| format!("{t} ms")),
            s.access_expires_at.map_or("-".into(), |t| t.to_string()),
            s.lease_expires_at.map_or("-".into(), |t| t.to_string()),
        ) + &owed
            .iter()
            .map(|o| format!("\n  logout owed to {} for account '{}' (device {})", o.server, o.account, o.device_id))
            .collect::<String>()
    })
}

#[cfg(test)]
mod tests {
    use super::browser_command;

    #[test]
    fn the_browser_command_comes_from_browser_then_xdg_open_on_a_desktop() {
        let url = "https://id.example/auth?a=1&b=2";
        let words = |b: Option<&str>, desktop| browser_command(b, desktop, url);
        assert_eq!(words(Some("firefox"), false), Some(vec!["firefox".into(), url.into()]));
        assert_eq!(words(Some("w3m -o x:lynx"), true), Some(vec!["w3m".into(), "-o".into(), "x".into(), url.into()]));
        assert_eq!(
            words(Some("open --url=%s --new"), false),
            Some(vec!["open".into(), format!("--url={url}"), "--new".into()])
        );
        assert_eq!(words(Some(""), true), Some(vec!["xdg-open".into(), url.into()]));
        assert_eq!(words(None, true), Some(vec!["xdg-open".into(), url.into()]));
        assert_eq!(words(None, false), None);
    }
}
