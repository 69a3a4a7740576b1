//! Where secrets come from: `--passphrase-fd`, the environment, or a terminal prompt.
//! Never from arguments.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};

use anyhow::{Context, Result, bail};
use fieldvault_core::Passphrase;
use zeroize::Zeroizing;

/// How to ask on a terminal.
#[derive(Clone, Copy)]
pub enum Prompt {
    /// Ask once.
    Once,
    /// Ask twice and compare (a new passphrase).
    Confirm,
}

fn read_fd(fd: u32) -> Result<Zeroizing<String>> {
    // /proc/self/fd/N reopens an inherited descriptor without unsafe code.
    let file = File::open(format!("/proc/self/fd/{fd}"))
        .with_context(|| format!("cannot read --passphrase-fd {fd}"))?;
    let mut line = Zeroizing::new(String::new());
    BufReader::new(file)
        .read_line(&mut line)
        .with_context(|| format!("cannot read --passphrase-fd {fd}"))?;
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads a passphrase: `--passphrase-fd`, then `env_var`, then a prompt on the terminal.
pub fn passphrase(
    fd: Option<u32>,
    env_var: &str,
    label: &str,
    prompt: Prompt,
) -> Result<Passphrase> {
    let text = if let Some(fd) = fd {
        read_fd(fd)?
    } else if let Ok(v) = std::env::var(env_var) {
        Zeroizing::new(v)
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("{label}: "))
                .context("cannot read the passphrase")?,
        );
        if let Prompt::Confirm = prompt {
            let again = Zeroizing::new(
                rpassword::prompt_password(format!("{label} again: "))
                    .context("cannot read the passphrase")?,
            );
            if *first != *again {
                bail!("the two passphrases differ; nothing was changed");
            }
        }
        first
    } else {
        bail!("no passphrase: run on a terminal, pass --passphrase-fd N, or set {env_var}");
    };
    if text.is_empty() {
        bail!("the passphrase is empty");
    }
    Ok(Passphrase::new(text))
}

/// Asks "yes/no" on the terminal; refuses without one.
pub fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {question} without confirmation: pass --yes");
    }
    eprint!("{question}? Type 'yes' to confirm: ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(answer.trim() == "yes")
}
