//! The key directory: everything secret the server needs, kept apart from the data so that a
//! copy of the data directory alone leaks nothing (SPEC section 5, "Server storage").
//!
//! ```text
//! KEY_DIR/                0700
//!   store.key             32 random bytes: keys the SQLCipher store, seals secrets on PostgreSQL
//!   token-signing.p8      Ed25519 private key, PKCS#8 DER: signs access, offline and directive tokens
//!   tls-cert.pem          the server certificate (self-signed unless one is given)
//!   tls-key.pem           its private key (ECDSA P-256 for a self-signed one, or the operator's)
//!   tls-next.pem          the next key and its certificate, after `cert next` (`crate::certs`)
//!   tls-previous.pem      the key in use before the last `cert rotate`
//! ```

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::PublicKeyData;
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

    /// Like [`KeyDir::init`], but with the operator's own certificate chain and private key
    /// (PEM) instead of a self-signed certificate. Both are checked first: the key must match
    /// the certificate (rustls refuses a mismatched pair). Returns the leaf's SPKI pin.
    ///
    /// # Errors
    /// [`Error::Tls`] for unreadable or mismatched files; otherwise as [`KeyDir::init`].
    pub fn init_with_certificate(&self, data: &Path, cert_pem: &Path, key_pem: &Path) -> Result<String, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let cert_bytes = fs::read(cert_pem).map_err(io("read", cert_pem))?;
        let key_bytes = Zeroizing::new(fs::read(key_pem).map_err(io("read", key_pem))?);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Tls(format!("{}: {e}", cert_pem.display())))?;
        let leaf = certs.first().ok_or_else(|| Error::Tls(format!("{}: no certificate in it", cert_pem.display())))?;
        let key =
            PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| Error::Tls(format!("{}: {e}", key_pem.display())))?;
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key)
            .map_err(|e| Error::Tls(format!("the key does not fit the certificate: {e}")))?;
        let parsed = rustls::server::ParsedCertificate::try_from(leaf).map_err(|e| Error::Tls(e.to_string()))?;
        let pin = spki_pin(parsed.subject_public_key_info().as_ref());
        self.write_keys(data, &cert_bytes, &key_bytes)?;
        Ok(pin)
    }

    /// Creates the data directory (if missing) and the key directory with a fresh store key,
    /// token-signing key and a self-signed certificate for `hosts` (names and IP addresses),
    /// valid for a year from now (`crate::certs`).
    /// Returns the certificate's SPKI pin.
    ///
    /// # Errors
    /// [`Error::AlreadyInitialised`] or [`Error::NotEmpty`] without changing anything.
    pub fn init(&self, data: &Path, hosts: &[String]) -> Result<String, Error> {
        let now = (crate::system_clock())();
        if self.dir.join(STORE_KEY).exists() || self.dir.join(SIGNING_KEY).exists() {
            return Err(Error::AlreadyInitialised { dir: self.dir.clone() });
        }
        // Everything that can fail without touching the disk comes first.
        let tls_key = crate::certs::new_key()?;
        let cert = crate::certs::self_signed(&tls_key, hosts, now)?;
        let pin = spki_pin(&tls_key.subject_public_key_info());
        let key_pem = Zeroizing::new(tls_key.serialize_pem());
        self.write_keys(data, cert.as_bytes(), key_pem.as_bytes())?;
        Ok(pin)
    }

    /// Writes a fresh store key and token-signing key and the given TLS certificate and key.
    fn write_keys(&self, data: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        if self.dir.join(STORE_KEY).exists() || self.dir.join(SIGNING_KEY).exists() {
            return Err(Error::AlreadyInitialised { dir: self.dir.clone() });
        }
        let mut store_key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(store_key.as_mut()).map_err(|_| Error::Generate("the OS random source failed".into()))?;
        // PKCS#8 v1 (RFC 5208): what OpenSSL and JWT libraries read; v2 adds the public key,
        // which OpenSSL 3.0 refuses.
        let signing = Ed25519KeyPair::generate()
            .and_then(|k| k.to_pkcs8v1())
            .map_err(|_| Error::Generate("Ed25519 key generation failed".into()))?;
        let signing = Zeroizing::new(signing.as_ref().to_vec());
        private_dir(&self.dir, false)?;
        private_dir(data, true)?;
        write_private(&self.dir.join(STORE_KEY), store_key.as_ref())?;
        write_private(&self.dir.join(SIGNING_KEY), &signing)?;
        write_private(&self.dir.join(TLS_KEY), key_pem)?;
        write_private(&self.dir.join(TLS_CERT), cert_pem)
    }
}

impl KeyDir {
    /// The 32-byte store key.
    ///
    /// # Errors
    /// [`Error::Io`] when missing, unreadable or not 32 bytes long.
    pub fn store_key(&self) -> Result<Zeroizing<[u8; 32]>, Error> {
        let path = self.dir.join(STORE_KEY);
        let bytes = Zeroizing::new(fs::read(&path).map_err(io("read", &path))?);
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::Io {
            op: "read",
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the store key must be 32 bytes"),
        })?;
        Ok(Zeroizing::new(arr))
    }

    /// The token signer over `token-signing.p8`.
    ///
    /// # Errors
    /// [`Error::Io`] when missing, unreadable or not an Ed25519 PKCS#8 key.
    pub fn token_signer(&self) -> Result<fieldvault_core::protocol::TokenSigner, Error> {
        let path = self.dir.join(SIGNING_KEY);
        let der = Zeroizing::new(fs::read(&path).map_err(io("read", &path))?);
        fieldvault_core::protocol::TokenSigner::from_pkcs8(&der).map_err(|e| Error::Io {
            op: "read",
            path,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }
}
