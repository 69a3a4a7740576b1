//! Keys derived from the content key (RFC 5869 HKDF-SHA256, salt = the file's salt).

use aws_lc_rs::aead::{LessSafeKey, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use zeroize::Zeroizing;

use super::Header;
use crate::ContentKey;

/// The keys one file uses. Dropped with the encryptor or decryptor.
pub(crate) struct FileKeys {
    pub(crate) chunk: LessSafeKey,
    pub(crate) manifest: hmac::Key,
}

fn expand(prk: &hkdf::Prk, label: &[u8], header: &Header) -> Zeroizing<[u8; 32]> {
    // info = label || 0x00 || algorithm code || attachment id: a key for one purpose, one
    // algorithm and one attachment.
    let alg = [0u8, header.algorithm as u8];
    let info: [&[u8]; 3] = [label, &alg, &header.attachment];
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("32 bytes is within HKDF-SHA256's output limit");
    out
}

impl FileKeys {
    pub(crate) fn derive(cek: &ContentKey, header: &Header) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(cek.expose_secret());
        let chunk = expand(&prk, b"fieldvault/v1/attachment/chunk-key", header);
        let manifest = expand(&prk, b"fieldvault/v1/attachment/manifest-key", header);
        FileKeys {
            chunk: LessSafeKey::new(UnboundKey::new(header.algorithm.aead(), chunk.as_ref()).expect("32-byte key")),
            manifest: hmac::Key::new(hmac::HMAC_SHA256, manifest.as_ref()),
        }
    }
}
