//! The server's TLS configuration: TLS 1.3 preferred, 1.2 the minimum (rustls has nothing
//! older), aws-lc-rs, the certificate and key from the key directory.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::keydir::KeyDir;

impl KeyDir {
    /// The TLS server configuration for the certificate and key in this directory.
    ///
    /// # Errors
    /// [`Error::Tls`] when the files are missing or unreadable, or rustls refuses them.
    pub fn tls_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let cert_path = self.tls_cert_path();
        let key_path = self.tls_key_path();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| Error::Tls(format!("{}: {e}", cert_path.display())))?;
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| Error::Tls(format!("{}: {e}", key_path.display())))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
