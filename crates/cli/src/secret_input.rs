//! Where secrets come from: `--passphrase-fd`, the environment, or a terminal prompt.
//! Never from arguments.

use std::fs::File;
use std::io::{IsTerminal, Read};

use anyhow::{Context, Result, bail};
use fieldvault_core::Passphrase;
use fieldvault_core::protocol::oidc::TotpCode;
use zeroize::Zeroizing;

/// How to ask on a terminal.
#[derive(Clone, Copy)]
pub enum Prompt {
    /// Ask once.
    Once,
    /// Ask twice and compare (a new passphrase).
    Confirm,
}

fn read_fd(fd: u32, flag: &str) -> Result<Zeroizing<String>> {
    // /proc/self/fd/N reopens an inherited descriptor without unsafe code. Read one byte at
    // a time up to the first newline: no buffer we cannot zeroize, and no wait for EOF on a
    // pipe that stays open.
    let mut file = match File::open(format!("/proc/self/fd/{fd}")) {
        Ok(file) => file,
        // /proc/self/fd lists the open descriptors: "No such file or directory" there means
        // this one was never opened for the command (`{fd}<FILE` in the shell opens it).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{flag} {fd}: descriptor {fd} is not open (open it for the command, e.g. `{fd}<FILE`)")
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {flag} {fd}")),
    };
    // Room for the longest passphrase up front: a reallocation would free an unwiped copy.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PASSPHRASE_BYTES));
    let mut byte = [0u8; 1];
    while bytes.len() < MAX_PASSPHRASE_BYTES {
        match file.read(&mut byte).with_context(|| format!("cannot read {flag} {fd}"))? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => bytes.push(byte[0]),
        }
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let text = std::str::from_utf8(&bytes).context("the passphrase is not UTF-8")?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Longest passphrase read from a descriptor.
const MAX_PASSPHRASE_BYTES: usize = 4096;

/// Where one secret may come from: a descriptor given by an option, or an environment
/// variable (else a terminal prompt).
pub struct Source<'a> {
    /// The descriptor, if the option was given.
    pub fd: Option<u32>,
    /// The option's name, for messages (`--passphrase-fd`).
    pub flag: &'a str,
    /// The environment variable (none when empty).
    pub env_var: &'a str,
}

/// Reads a passphrase: the descriptor, then the environment variable, then a prompt on the
/// terminal.
pub fn passphrase(from: &Source<'_>, label: &str, prompt: Prompt) -> Result<Passphrase> {
    secret(from, "passphrase", label, prompt).map(Passphrase::new)
}

/// Reads a recovery key's text from the descriptor or a prompt (never the environment).
pub fn recovery_key(fd: Option<u32>) -> Result<Zeroizing<String>> {
    let from = Source { fd, flag: "--recovery-key-fd", env_var: "" };
    secret(&from, "recovery key", "Recovery key", Prompt::Once)
}

/// Reads a sync server password, the same ways as a passphrase.
pub fn password(from: &Source<'_>) -> Result<Zeroizing<String>> {
    secret(from, "password", "Password", Prompt::Once)
}

/// Reads a TOTP code (multi-factor login) from the descriptor or a "TOTP code: " prompt
/// (never the environment: a code is good for one login). Spaces are dropped, as apps show
/// `123 456`.
pub fn totp_code(fd: Option<u32>) -> Result<TotpCode> {
    let from = Source { fd, flag: "--totp-fd", env_var: "" };
    let text = secret(&from, "TOTP code", "TOTP code", Prompt::Once)?;
    Ok(TotpCode::new(Zeroizing::new(text.chars().filter(|c| *c != ' ').collect())))
}

/// One secret (`what` names it in messages): the descriptor, then the environment variable,
/// then a prompt on the terminal (asked twice with [`Prompt::Confirm`]). Never empty.
fn secret(from: &Source<'_>, what: &str, label: &str, prompt: Prompt) -> Result<Zeroizing<String>> {
    let Source { fd, flag, env_var } = *from;
    let text = if let Some(fd) = fd {
        read_fd(fd, flag)?
    } else if let Some(v) = Some(env_var).filter(|e| !e.is_empty()).and_then(|e| std::env::var(e).ok()) {
        Zeroizing::new(v)
    } else if std::io::stdin().is_terminal() {
        let ask = |label: String| {
            rpassword::prompt_password(label).map(Zeroizing::new).with_context(|| format!("cannot read the {what}"))
        };
        let first = ask(format!("{label}: "))?;
        if let Prompt::Confirm = prompt
            && *first != *ask(format!("{label} again: "))?
        {
            bail!("the two {what}s differ; nothing was changed");
        }
        first
    } else {
        if env_var.is_empty() {
            bail!("no {what}: run on a terminal, or pass {flag} N");
        }
        bail!("no {what}: run on a terminal, pass {flag} N, or set {env_var}");
    };
    if text.is_empty() {
        bail!("the {what} is empty");
    }
    Ok(text)
}

/// Asks "yes/no" on the terminal; refuses without one.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {question} without confirmation: pass --yes");
    }
    eprint!("{question}? Type 'yes' to confirm: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("cannot read the answer")?;
    Ok(answer.trim() == "yes")
}
