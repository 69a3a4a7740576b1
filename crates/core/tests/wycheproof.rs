//! Project Wycheproof vectors run against the primitives exactly as Fieldvault calls them
//! (aws-lc-rs through the same types): AES-256-GCM and ChaCha20-Poly1305 with 96-bit nonces
//! and 128-bit tags, HKDF-SHA256, HMAC-SHA256.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use wycheproof::TestResult;

fn aead(name: wycheproof::aead::TestName, alg: &'static Algorithm) -> usize {
    let set = wycheproof::aead::TestSet::load(name).expect("vectors load");
    let mut run = 0;
    for group in set.test_groups {
        // Fieldvault uses 256-bit keys, 96-bit nonces and full 128-bit tags only.
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in group.tests {
            let key = LessSafeKey::new(UnboundKey::new(alg, &t.key).expect("256-bit key"));
            let nonce: [u8; 12] = t.nonce.as_ref().try_into().expect("96-bit nonce");
            let mut sealed = t.ct.to_vec();
            sealed.extend_from_slice(&t.tag);
            let opened = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&t.aad[..]), &mut sealed)
                .map(|p| p.to_vec());
            match t.result {
                TestResult::Valid => {
                    assert_eq!(opened.expect("valid vector opens"), t.pt.to_vec(), "tc {}", t.tc_id);
                    let mut buf = t.pt.to_vec();
                    let tag = key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&t.aad[..]),
                            &mut buf,
                        )
                        .expect("seal");
                    assert_eq!((buf, tag.as_ref().to_vec()), (t.ct.to_vec(), t.tag.to_vec()), "tc {}", t.tc_id);
                }
                TestResult::Invalid => assert!(opened.is_err(), "tc {} must be refused: {}", t.tc_id, t.comment),
                TestResult::Acceptable => {}
            }
            run += 1;
        }
    }
    run
}

#[test]
fn aes_256_gcm_passes_wycheproof() {
    assert!(aead(wycheproof::aead::TestName::AesGcm, &AES_256_GCM) > 50);
}

#[test]
fn chacha20_poly1305_passes_wycheproof() {
    assert!(aead(wycheproof::aead::TestName::ChaCha20Poly1305, &CHACHA20_POLY1305) > 50);
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[test]
fn hkdf_sha256_passes_wycheproof() {
    let set = wycheproof::hkdf::TestSet::load(wycheproof::hkdf::TestName::HkdfSha256).expect("vectors load");
    let mut run = 0;
    for group in set.test_groups {
        for t in group.tests {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &t.salt).extract(&t.ikm);
            let info: [&[u8]; 1] = [&t.info];
            let mut out = vec![0u8; t.size];
            let got = prk.expand(&info, Len(t.size)).and_then(|okm| okm.fill(&mut out)).map(|_| out);
            match t.result {
                TestResult::Valid => assert_eq!(got.expect("valid size"), t.okm.to_vec(), "tc {}", t.tc_id),
                TestResult::Invalid => assert!(got.is_err(), "tc {} must be refused", t.tc_id),
                TestResult::Acceptable => {}
            }
            run += 1;
        }
    }
    assert!(run > 50);
}

#[test]
fn hmac_sha256_passes_wycheproof() {
    let set = wycheproof::mac::TestSet::load(wycheproof::mac::TestName::HmacSha256).expect("vectors load");
    let mut run = 0;
    for group in set.test_groups {
        // Fieldvault compares full 256-bit tags only (truncated-tag groups do not apply).
        if group.tag_size != 256 {
            continue;
        }
        for t in group.tests {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &t.key);
            let ok = hmac::verify(&key, &t.msg, &t.tag).is_ok();
            match t.result {
                TestResult::Valid => assert!(ok, "tc {}", t.tc_id),
                TestResult::Invalid => assert!(!ok, "tc {} must be refused: {}", t.tc_id, t.comment),
                TestResult::Acceptable => {}
            }
            run += 1;
        }
    }
    assert!(run > 50);
}
