//! The server's TLS certificate over time: what `init` makes, and `cert status | renew | next |
//! rotate [--undo]` (docs/protocol.md section 20 is the procedure).
//!
//! ```text
//! KEY_DIR/
//!   tls-cert.pem, tls-key.pem   the certificate and key in use (the "current" key)
//!   tls-next.pem                the next key and a certificate for it, one file (`cert next`)
//!   tls-previous.pem            the key in use before the last `cert rotate` (for `--undo`)
//! ```
//!
//! A certificate made here is a standard leaf: ECDSA P-256, valid for [`LIFETIME_DAYS`] days
//! from an hour before it is made, `BasicConstraints CA:FALSE`, `KeyUsage digitalSignature`,
//! `ExtendedKeyUsage serverAuth`, subject and authority key identifiers, a random serial.
//! Devices pin the key, not the certificate: `renew` keeps the key (the pin stays), `next` makes
//! the key devices learn from `GET /v1/server/pins` before `rotate` puts it in use.
//!
//! Every change writes a new file beside the old and renames it into place. A rotation moves
//! two files (the key, then the certificate): [`KeyDir::repair_rotation`] finishes one that a
//! crash cut between the two, and every `cert` command and `serve` runs it first.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::keydir::{Error, KeyDir, spki_pin};

/// Days a certificate made here is valid (Mozilla's intermediate profile allows 366).
pub const LIFETIME_DAYS: u64 = 365;
/// `serve` warns in its log this many days before the certificate in use expires.
pub const WARN_DAYS: u64 = 30;

const TLS_CERT: &str = "tls-cert.pem";
const TLS_KEY: &str = "tls-key.pem";
const NEXT: &str = "tls-next.pem";
const PREVIOUS: &str = "tls-previous.pem";

/// Which of the key directory's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// In use.
    Current,
    /// Made by `cert next`, not yet in use.
    Next,
    /// In use before the last `cert rotate`.
    Previous,
}

impl Slot {
    /// `current`, `next`, `previous`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Next => "next",
            Slot::Previous => "previous",
        }
    }
}

/// A certificate and its key as `cert status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Which key.
    pub slot: Slot,
    /// The key's SPKI pin (`sha256/BASE64`).
    pub pin: String,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
    /// Whether it is self-signed (made here, so `renew` can re-issue it).
    pub self_signed: bool,
    /// Its DNS names and IP addresses.
    pub hosts: Vec<String>,
}

impl CertInfo {
    /// Whole days from `now` to expiry (0 once expired).
    pub fn days_left(&self, now: u64) -> u64 {
        self.not_after.saturating_sub(now) / 86_400
    }
}

/// A certificate chain and its key, as PEM.
struct Pair {
    cert_pem: Vec<u8>,
    key_pem: Zeroizing<Vec<u8>>,
}

fn tls(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {e}", what.display()))
}

fn generate(e: impl std::fmt::Display) -> Error {
    Error::Generate(e.to_string())
}

/// A standard leaf for `hosts`, self-signed with `key`, valid from an hour before `now` for
/// [`LIFETIME_DAYS`] days.
pub(crate) fn self_signed(key: &KeyPair, hosts: &[String], now: u64) -> Result<String, Error> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    params.distinguished_name.push(DnType::CommonName, "fieldvault-server");
    for h in hosts {
        params.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into().map_err(|e: rcgen::Error| generate(e))?),
        });
    }
    let from = i64::try_from(now.saturating_sub(3600)).map_err(generate)?;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).map_err(generate)?;
    params.not_after = params.not_before + time::Duration::days(LIFETIME_DAYS as i64);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| generate("the OS random source failed"))?;
    serial[0] &= 0x7f; // a positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params.self_signed(key).map_err(generate)?.pem())
}

/// A new ECDSA P-256 key.
pub(crate) fn new_key() -> Result<KeyPair, Error> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)
}

/// What a certificate (the chain's first, PEM) says about itself.
fn describe(slot: Slot, cert_pem: &[u8], origin: &Path) -> Result<CertInfo, Error> {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or_else(|| tls(origin, "no certificate in it"))?
        .map_err(|e| tls(origin, e))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| tls(origin, e))?;
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => hosts.push((*n).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => hosts.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")).to_string()),
                    16 => hosts.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).expect("16 bytes")).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Ok(CertInfo {
        slot,
        pin: spki_pin(cert.public_key().raw),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        hosts,
    })
}

/// The pin of a private key (PEM: PKCS#8, SEC1 or PKCS#1, as rustls reads it).
fn key_pin(key_pem: &[u8], origin: &Path) -> Result<String, Error> {
    let der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(origin, e))?;
    let key =
        rustls::crypto::aws_lc_rs::default_provider().key_provider.load_private_key(der).map_err(|e| tls(origin, e))?;
    let spki = key.public_key().ok_or_else(|| tls(origin, "its public key cannot be derived"))?;
    Ok(spki_pin(spki.as_ref()))
}

/// Writes `bytes` to `path` through a new 0600 file renamed into place, synced.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("pem.new");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| Error::Io { op: "create", path: tmp.clone(), source })?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|source| Error::Io {
        op: "write",
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| Error::Io { op: "rename", path: path.to_path_buf(), source })?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| Error::Io {
        op: "fsync",
        path: dir.to_path_buf(),
        source,
    })
}

fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io { op: "remove", path: path.to_path_buf(), source }),
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { op: "read", path: path.to_path_buf(), source }),
    }
}

/// Splits a one-file bundle (certificates, then the key) into its parts.
fn split(bundle: &[u8], origin: &Path) -> Result<Pair, Error> {
    let text = std::str::from_utf8(bundle).map_err(|e| tls(origin, e))?;
    let key = text.find("PRIVATE KEY-----").ok_or_else(|| tls(origin, "no private key in it"))?;
    let at = text[..key].rfind("-----BEGIN").ok_or_else(|| tls(origin, "no private key in it"))?;
    Ok(Pair { cert_pem: bundle[..at].to_vec(), key_pem: Zeroizing::new(bundle[at..].to_vec()) })
}

fn bundle(pair: &Pair) -> Zeroizing<Vec<u8>> {
    let mut b = Zeroizing::new(pair.cert_pem.clone());
    b.extend_from_slice(&pair.key_pem);
    b
}

impl KeyDir {
    fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    fn current_pair(&self) -> Result<Pair, Error> {
        let (cert, key) = (self.file(TLS_CERT), self.file(TLS_KEY));
        let cert_pem = read(&cert)?.ok_or_else(|| tls(&cert, "missing (run `fieldvault-server init`)"))?;
        let key_pem = Zeroizing::new(read(&key)?.ok_or_else(|| tls(&key, "missing"))?);
        Ok(Pair { cert_pem, key_pem })
    }

    fn bundle_pair(&self, name: &str) -> Result<Option<Pair>, Error> {
        let path = self.file(name);
        let Some(bytes) = read(&path)?.map(Zeroizing::new) else { return Ok(None) };
        split(&bytes, &path).map(Some)
    }

    /// Finishes a rotation (or its undo) that a crash cut between moving the key and moving
    /// the certificate: when the key in use is the next (or previous) key, its certificate is
    /// put in place too, and a bundle whose key is in use is removed. Changes nothing else.
    ///
    /// # Errors
    /// Unreadable files.
    pub fn repair_rotation(&self) -> Result<(), Error> {
        let key_path = self.file(TLS_KEY);
        let Some(key) = read(&key_path)?.map(Zeroizing::new) else { return Ok(()) };
        let in_use = key_pin(&key, &key_path)?;
        for name in [NEXT, PREVIOUS] {
            let path = self.file(name);
            let Some(pair) = self.bundle_pair(name)? else { continue };
            if key_pin(&pair.key_pem, &path)? != in_use {
                continue;
            }
            let cert_path = self.file(TLS_CERT);
            let cert_pin = read(&cert_path)?.map(|c| describe(Slot::Current, &c, &cert_path)).transpose()?;
            if cert_pin.map(|c| c.pin) != Some(in_use.clone()) {
                tracing::warn!(bundle = %path.display(), "finishing a certificate rotation a crash interrupted");
                replace(&cert_path, &pair.cert_pem)?;
            }
            remove(&path)?;
        }
        Ok(())
    }

    /// The certificates of every key the directory holds: current, then next and previous
    /// when present. Reads only (a rotation a crash cut is finished by
    /// [`KeyDir::repair_rotation`], which `cert` commands and `serve` run first).
    ///
    /// # Errors
    /// Unreadable or unparsable files.
    pub fn cert_status(&self) -> Result<Vec<CertInfo>, Error> {
        let current = self.current_pair()?;
        let mut out = vec![describe(Slot::Current, &current.cert_pem, &self.file(TLS_CERT))?];
        for (slot, name) in [(Slot::Next, NEXT), (Slot::Previous, PREVIOUS)] {
            if let Some(pair) = self.bundle_pair(name)? {
                out.push(describe(slot, &pair.cert_pem, &self.file(name))?);
            }
        }
        Ok(out)
    }

    /// The pins a device should hold: the current key's, then the next key's when made.
    ///
    /// # Errors
    /// As [`KeyDir::cert_status`].
    pub fn announced_pins(&self) -> Result<Vec<String>, Error> {
        Ok(self.cert_status()?.into_iter().filter(|c| c.slot != Slot::Previous).map(|c| c.pin).collect())
    }

    /// Re-issues the certificate in use for the same key (the pin does not change): a new
    /// self-signed certificate for the same names, valid for [`LIFETIME_DAYS`] days from now;
    /// or, with `cert_pem`, the operator's new certificate chain, which must be for the same key.
    ///
    /// # Errors
    /// [`Error::Tls`] for a certificate of another key, or when the one in use was not made
    /// here and no new one is given.
    pub fn cert_renew(&self, now: u64, cert_pem: Option<&Path>) -> Result<CertInfo, Error> {
        self.repair_rotation()?;
        let current = self.current_pair()?;
        let key_path = self.file(TLS_KEY);
        let pin = key_pin(&current.key_pem, &key_path)?;
        let new_cert = match cert_pem {
            Some(path) => {
                let bytes =
                    fs::read(path).map_err(|source| Error::Io { op: "read", path: path.to_path_buf(), source })?;
                let given = describe(Slot::Current, &bytes, path)?;
                if given.pin != pin {
                    return Err(tls(
                        path,
                        format!("its key ({}) is not the key in use ({pin}); `cert renew` keeps the key", given.pin),
                    ));
                }
                check_pair(&bytes, &current.key_pem, path)?;
                bytes
            }
            None => {
                let info = describe(Slot::Current, &current.cert_pem, &self.file(TLS_CERT))?;
                if !info.self_signed {
                    return Err(tls(
                        &self.file(TLS_CERT),
                        "this certificate was not made by fieldvault-server; renew it with your CA and install it with `cert renew --tls-cert FILE`",
                    ));
                }
                let text = std::str::from_utf8(&current.key_pem).map_err(|e| tls(&key_path, e))?;
                let key = KeyPair::from_pem(text).map_err(|e| tls(&key_path, e))?;
                self_signed(&key, &info.hosts, now)?.into_bytes()
            }
        };
        replace(&self.file(TLS_CERT), &new_cert)?;
        describe(Slot::Current, &new_cert, &self.file(TLS_CERT))
    }

    /// Makes the next key and a self-signed certificate for it (the names of the one in use),
    /// kept apart until `cert rotate`. When a next key exists already, it is kept and described
    /// (`false`); a new one is `true`.
    ///
    /// # Errors
    /// Unreadable files; key generation.
    pub fn cert_next(&self, now: u64) -> Result<(CertInfo, bool), Error> {
        self.repair_rotation()?;
        if let Some(pair) = self.bundle_pair(NEXT)? {
            return Ok((describe(Slot::Next, &pair.cert_pem, &self.file(NEXT))?, false));
        }
        let current = self.current_pair()?;
        let hosts = describe(Slot::Current, &current.cert_pem, &self.file(TLS_CERT))?.hosts;
        let key = new_key()?;
        let cert_pem = self_signed(&key, &hosts, now)?.into_bytes();
        let pair = Pair { cert_pem, key_pem: Zeroizing::new(key.serialize_pem().into_bytes()) };
        replace(&self.file(NEXT), &bundle(&pair))?;
        Ok((describe(Slot::Next, &pair.cert_pem, &self.file(NEXT))?, true))
    }

    /// Puts the next key in use and keeps the one it replaces as the previous key (`undo`:
    /// puts the previous key back in use and keeps the replaced one as the next key). A
    /// running `serve` keeps the certificate it started with until it is restarted. Returns
    /// the certificate now in use.
    ///
    /// # Errors
    /// [`Error::Tls`] when there is no next key (no previous key for `undo`), or, for `undo`,
    /// when a next key was made since the rotation (undoing would replace it).
    pub fn cert_rotate(&self, undo: bool) -> Result<CertInfo, Error> {
        self.repair_rotation()?;
        let (from, to) = if undo { (PREVIOUS, NEXT) } else { (NEXT, PREVIOUS) };
        let Some(incoming) = self.bundle_pair(from)? else {
            return Err(Error::Tls(if undo {
                "there is no previous key to go back to (`cert rotate --undo` follows a `cert rotate`)".into()
            } else {
                "there is no next key: make one with `cert next`, let devices sync, then rotate".into()
            }));
        };
        check_pair(&incoming.cert_pem, &incoming.key_pem, &self.file(from))?;
        if undo && let Some(next) = self.bundle_pair(NEXT)? {
            let pin = describe(Slot::Next, &next.cert_pem, &self.file(NEXT))?.pin;
            return Err(Error::Tls(format!(
                "a next key ({pin}) was made after the rotation; undoing would replace it, so nothing was changed"
            )));
        }
        // The key in use goes to the other bundle first; then the key, then the certificate
        // (a crash between these two is finished by `repair_rotation`); then the bundle goes.
        replace(&self.file(to), &bundle(&self.current_pair()?))?;
        replace(&self.file(TLS_KEY), &incoming.key_pem)?;
        replace(&self.file(TLS_CERT), &incoming.cert_pem)?;
        remove(&self.file(from))?;
        describe(Slot::Current, &incoming.cert_pem, &self.file(TLS_CERT))
    }
}

/// Whether rustls takes this certificate chain with this key.
fn check_pair(cert_pem: &[u8], key_pem: &[u8], origin: &Path) -> Result<(), Error> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|e| tls(origin, e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls(origin, e))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(|_| ())
        .map_err(|e| tls(origin, format!("the key does not fit the certificate: {e}")))
}

/// The pins `GET /v1/server/pins` names, read from the key directory again whenever its
/// certificate files change (`cert next` and `cert rotate` beside a running server show at
/// the next request), and the expiry warning `serve` logs.
#[derive(Debug)]
pub struct PinSource {
    dir: KeyDir,
    cache: std::sync::Mutex<Option<Stamped>>,
}

/// The certificate files' modification times, and the pins read when they had them.
type Stamped = (Vec<Option<std::time::SystemTime>>, Vec<String>);

impl PinSource {
    /// The pins of the key directory `dir`.
    pub fn new(dir: KeyDir) -> PinSource {
        PinSource { dir, cache: std::sync::Mutex::new(None) }
    }

    fn stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        [TLS_CERT, TLS_KEY, NEXT, PREVIOUS]
            .iter()
            .map(|n| fs::metadata(self.dir.path().join(n)).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// The current key's pin, then the next key's when made.
    ///
    /// # Errors
    /// As [`KeyDir::announced_pins`].
    pub fn pins(&self) -> Result<Vec<String>, Error> {
        let stamps = self.stamps();
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((seen, pins)) = cache.as_ref()
            && *seen == stamps
        {
            return Ok(pins.clone());
        }
        let pins = self.dir.announced_pins()?;
        *cache = Some((stamps, pins.clone()));
        Ok(pins)
    }

    /// Logs a warning when the certificate in use expires within [`WARN_DAYS`] days of `now`
    /// (an error once it has); returns the days left.
    ///
    /// # Errors
    /// As [`KeyDir::cert_status`].
    pub fn warn_if_expiring(&self, now: u64) -> Result<u64, Error> {
        let status = self.dir.cert_status()?;
        let current =
            status.iter().find(|c| c.slot == Slot::Current).expect("the current certificate is always listed");
        let days = current.days_left(now);
        if current.not_after <= now {
            tracing::error!(pin = %current.pin, "the TLS certificate has expired: run `fieldvault-server cert renew`, then restart");
        } else if days < WARN_DAYS {
            tracing::warn!(pin = %current.pin, days_left = days,
                "the TLS certificate expires soon: run `fieldvault-server cert renew`, then restart");
        }
        Ok(days)
    }
}
