//! SPKI pinning (SPEC section 5): the client trusts the server's key, not a CA. A TLS
//! connection succeeds only if the server's certificate carries a public key whose SHA-256
//! is one of the pins (current and next), its names match the host, and the handshake
//! signature verifies. A mismatch fails the handshake: no byte of HTTP is sent.

use std::fmt;
use std::sync::Arc;

use fieldvault_core::Pin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::Error;

/// A set of accepted SPKI SHA-256 pins: the server's current key and, during a rotation,
/// the next one.
#[derive(Clone, PartialEq, Eq)]
pub struct Pins(Vec<Pin>);

impl fmt::Debug for Pins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(ToString::to_string)).finish()
    }
}

impl Pins {
    /// Parses pins written `sha256/BASE64` (standard alphabet, padded: 44 characters).
    ///
    /// # Errors
    /// [`Error::InvalidPin`] for any other form, or an empty list.
    pub fn parse<S: AsRef<str>>(pins: &[S]) -> Result<Pins, Error> {
        if pins.is_empty() {
            return Err(Error::InvalidPin("at least one pin (sha256/BASE64) is required".into()));
        }
        pins.iter()
            .map(|p| p.as_ref().parse::<Pin>().map_err(|e| Error::InvalidPin(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Pins)
    }

    /// A set from pins already parsed.
    ///
    /// # Errors
    /// [`Error::InvalidPin`] for an empty list.
    pub fn new(pins: Vec<Pin>) -> Result<Pins, Error> {
        if pins.is_empty() {
            return Err(Error::InvalidPin("at least one pin (sha256/BASE64) is required".into()));
        }
        Ok(Pins(pins))
    }

    /// The pins, in the order given.
    pub fn pins(&self) -> &[Pin] {
        &self.0
    }

    fn contains(&self, spki: &[u8]) -> bool {
        let pin = Pin::of_spki(spki);
        self.0.contains(&pin)
    }
}

/// Verifies the server certificate against [`Pins`] instead of a CA.
#[derive(Debug)]
pub struct PinnedVerifier {
    pins: Pins,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        if !self.pins.contains(cert.subject_public_key_info().as_ref()) {
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure));
        }
        rustls::client::verify_server_name(&cert, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration for the sync server: TLS 1.3 preferred, 1.2 the minimum
/// (rustls has nothing older), aws-lc-rs, the server certificate checked against `pins`.
pub fn pinned_client_config(pins: Pins) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedVerifier { pins, provider: provider.clone() });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    #[test]
    fn pins_must_be_sha256_base64_of_32_bytes() {
        let good = format!("sha256/{}", STANDARD.encode([7u8; 32]));
        assert!(Pins::parse(&[good.as_str()]).is_ok());
        for bad in ["sha1/AAAA", "sha256/not base64!", &format!("sha256/{}", STANDARD.encode([7u8; 31]))] {
            assert!(matches!(Pins::parse(&[bad]), Err(Error::InvalidPin(_))), "{bad}");
        }
        assert!(Pins::parse::<&str>(&[]).is_err());
    }
}
