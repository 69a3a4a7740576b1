//! The key directory: everything secret the server needs, kept apart from the data so that a
//! copy of the data directory alone leaks nothing (SPEC section 5, "Server storage").
//!
//! ```text
//! KEY_DIR/                0700
//!   store.key             32 random bytes: keys the SQLCipher store, seals secrets on PostgreSQL
//!   token-signing.p8      Ed25519 private key, PKCS#8 DER: signs access, offline and directive tokens
//!   tls-cert.pem          the server certificate (self-signed unless one is given)
//!   tls-key.pem           its private key (ECDSA P-256 for a self-signed one)
//! ```

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};
use zeroize::Zeroizing;

/// What setting up or reading the key directory can refuse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `init` on a key directory that already holds keys.
    #[error("{} already holds server keys; nothing was changed", dir.display())]
    AlreadyInitialised {
        /// The directory.
        dir: PathBuf,
    },
    /// A directory that must be empty is not.
    #[error("{} is not empty; the key directory must be new or empty", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// The TLS certificate or key cannot be used, or the address cannot be bound.
    #[error("TLS: {0}")]
    Tls(String),
    /// Generating a key or the certificate failed.
    #[error("key generation failed: {0}")]
    Generate(String),
    /// The file system failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

/// `sha256/` followed by the standard base64 (with padding) of SHA-256 over a DER
/// SubjectPublicKeyInfo: the pin format clients accept (`fieldvault login --pin`).
pub fn spki_pin(spki_der: &[u8]) -> String {
    format!("sha256/{}", STANDARD.encode(digest::digest(&digest::SHA256, spki_der)))
}

/// The key directory used when none is given: a sibling of the data directory named
/// `<data>.keys`, so that copying the data directory does not copy the keys.
pub fn default_key_dir(data: &Path) -> PathBuf {
    let name = data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    data.with_file_name(format!("{name}.keys"))
}

const STORE_KEY: &str = "store.key";
const SIGNING_KEY: &str = "token-signing.p8";
const TLS_CERT: &str = "tls-cert.pem";
const TLS_KEY: &str = "tls-key.pem";

/// The server's key directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

/// Makes `dir` (and missing parents) with mode 0700 whatever the umask; an existing one must
/// be empty, unless `allow_existing` (the data directory may already exist).
fn private_dir(dir: &Path, allow_existing: bool) -> Result<(), Error> {
    if dir.exists() {
        let empty = fs::read_dir(dir).map_err(io("list", dir))?.next().is_none();
        if !empty && !allow_existing {
            return Err(Error::NotEmpty { dir: dir.to_path_buf() });
        }
    } else {
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io("create directory", dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))
}

/// Writes a new file with mode 0600 (refusing to replace one) and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io("create", path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io("chmod", path))?;
    f.write_all(bytes).map_err(io("write", path))?;
    f.sync_all().map_err(io("fsync", path))
}

impl KeyDir {
    /// The key directory at `dir` (not read yet).
    pub fn at(dir: &Path) -> Self {
        KeyDir { dir: dir.to_path_buf() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn tls_cert_path(&self) -> PathBuf {
        self.dir.join(TLS_CERT)
    }

    pub(crate) fn tls_key_path(&self) -> PathBuf {
        self.dir.join(TLS_KEY)
    }

    /// Creates the data directory (if missing) and the key directory with a fresh store key,
    /// token-signing key and a self-signed certificate for `hosts` (names and IP addresses).
    /// Returns the certificate's SPKI pin.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialised`] or [`Error::NotEmpty`] without changing anything.
    pub fn init(&self, data: &Path, hosts: &[String]) -> Result<String, Error> {
        if self.dir.join(STORE_KEY).exists() || self.dir.join(SIGNING_KEY).exists() {
            return Err(Error::AlreadyInitialised { dir: self.dir.clone() });
        }
        // Everything that can fail without touching the disk comes first.
        let mut store_key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(store_key.as_mut()).map_err(|_| Error::Generate("the OS random source failed".into()))?;
        // PKCS#8 v1 (RFC 5208): what OpenSSL and JWT libraries read; v2 adds the public key,
        // which OpenSSL 3.0 refuses.
        let signing = Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| Error::Generate("Ed25519 key generation failed".into()))?;
        let signing = Zeroizing::new(signing.as_ref().to_vec());
        let tls_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| Error::Generate(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Generate(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, "fieldvault-server");
        for h in hosts {
            params.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    SanType::DnsName(h.clone().try_into().map_err(|e: rcgen::Error| Error::Generate(e.to_string()))?)
                }
            });
        }
        let cert = params.self_signed(&tls_key).map_err(|e| Error::Generate(e.to_string()))?;
        let pin = spki_pin(&tls_key.subject_public_key_info());
        let key_pem = Zeroizing::new(tls_key.serialize_pem());

        private_dir(&self.dir, false)?;
        private_dir(data, true)?;
        write_private(&self.dir.join(STORE_KEY), store_key.as_ref())?;
        write_private(&self.dir.join(SIGNING_KEY), &signing)?;
        write_private(&self.dir.join(TLS_KEY), key_pem.as_bytes())?;
        write_private(&self.dir.join(TLS_CERT), cert.pem().as_bytes())?;
        Ok(pin)
    }
}
