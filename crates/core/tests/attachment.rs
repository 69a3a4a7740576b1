//! The attachment format end to end: round trips across chunk boundaries in both header
//! versions, a tamper matrix where every edit fails with a precise error and releases no
//! plaintext, the document binding of version 2, the manifest check a download makes before
//! any chunk, and the re-encryption that moves a version 1 file to version 2.

use std::io::{Cursor, Write};
use std::sync::LazyLock;

use fieldvault_core::attachment::{
    Algorithm, Binding, Decryptor, Encryptor, HASHES_IN_MEMORY, Header, Manifest, Owner, check_without_key, reencrypt,
    verify_manifest,
};
use fieldvault_core::{AccountName, ContentKey, Error};
use zeroize::Zeroizing;

const CS: usize = 4096; // 2^12, the smallest chunk size: many chunks from little data

static ALICE: LazyLock<AccountName> = LazyLock::new(|| AccountName::new("alice").expect("valid"));

/// Who every test file belongs to: alice's account (version 1), document "v1" of "visits"
/// (version 2).
fn owner() -> Owner<'static> {
    Owner { account: &ALICE, collection: "visits", doc_id: "v1" }
}

/// A version 2 header, bound to [`owner`]'s document.
fn header(id: u8, algorithm: Algorithm) -> Header {
    Header {
        algorithm,
        chunk_log2: 12,
        attachment: [id; 16],
        binding: Binding::Document { collection: "visits".into(), id: "v1".into() },
        salt: [id.wrapping_add(1); 32],
        nonce_prefix: [id.wrapping_add(2); 7],
    }
}

/// The same as version 1, bound to [`owner`]'s account.
fn header_v1(id: u8, algorithm: Algorithm) -> Header {
    Header { binding: Binding::Account(ALICE.clone()), ..header(id, algorithm) }
}

fn cek(b: u8) -> ContentKey {
    ContentKey::from_bytes(Zeroizing::new([b; 32]))
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encrypt(plain: &[u8], id: u8, algorithm: Algorithm, key: &ContentKey) -> Vec<u8> {
    encrypt_with(plain, header(id, algorithm), key)
}

fn encrypt_with(plain: &[u8], header: Header, key: &ContentKey) -> Vec<u8> {
    let mut e = Encryptor::new(Vec::new(), key, header).expect("header");
    // Odd-sized writes, so chunk boundaries fall inside writes.
    for piece in plain.chunks(1000) {
        e.write_all(piece).expect("write");
    }
    let (file, written) = e.finish().expect("finish");
    assert_eq!(written.file_len, file.len() as u64);
    assert_eq!(written.length, plain.len() as u64);
    file
}

fn decrypt(file: &[u8], id: u8, key: &ContentKey) -> Result<Vec<u8>, (Error, Vec<u8>)> {
    let d = Decryptor::open(Cursor::new(file), key, &[id; 16], &owner()).map_err(|e| (e, Vec::new()))?;
    let mut out = Vec::new();
    match d.decrypt_to(&mut out) {
        Ok(v) => {
            assert_eq!(v.length, out.len() as u64);
            Ok(out)
        }
        Err(e) => Err((e, out)),
    }
}

#[test]
fn round_trips_at_every_chunk_boundary_for_both_algorithms_and_both_versions() {
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        for make in [header, header_v1] {
            for len in [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 17, 40 * CS] {
                let plain = data(len, len as u64 + 3);
                let h = make(1, algorithm);
                let what = format!("{algorithm:?} v{} {len}", h.version());
                let file = encrypt_with(&plain, h.clone(), &cek(9));
                assert_eq!(file[4], h.version(), "{what}");
                assert_eq!(decrypt(&file, 1, &cek(9)).expect("decrypts"), plain, "{what}");
                let (found, length, _root) =
                    check_without_key(Cursor::new(&file)).expect("a server can check it without a key");
                assert_eq!((found, length), (h, len as u64), "{what}");
            }
        }
    }
}

#[test]
fn random_access_returns_any_chunk_alone() {
    let plain = data(7 * CS + 100, 5);
    let file = encrypt(&plain, 2, Algorithm::Aes256Gcm, &cek(1));
    let mut d = Decryptor::open(Cursor::new(&file), &cek(1), &[2; 16], &owner()).expect("open");
    assert_eq!(d.chunk_count(), 8);
    for i in [7u64, 0, 3] {
        let i_us = i as usize;
        let end = ((i_us + 1) * CS).min(plain.len());
        assert_eq!(d.chunk(i).expect("chunk"), &plain[i_us * CS..end]);
    }
    assert!(matches!(d.chunk(8), Err(Error::AttachmentChunk { index: 8, .. })));
}

#[test]
fn the_same_plaintext_never_gives_the_same_bytes_under_another_salt_or_key() {
    let plain = data(3 * CS, 7);
    let a = encrypt(&plain, 3, Algorithm::Aes256Gcm, &cek(1));
    let b = encrypt(&plain, 3, Algorithm::Aes256Gcm, &cek(2));
    let ha = Header::parse(&a).expect("header").1;
    assert_ne!(a[ha..ha + CS], b[ha..ha + CS]);
}

/// Decrypting `file` must fail, with the error `check` accepts, and whatever was written
/// before the failure must be exactly the verified chunks before `first_bad_chunk`.
fn must_fail(file: &[u8], plain: &[u8], first_bad_chunk: Option<usize>, check: impl Fn(&Error) -> bool, what: &str) {
    match decrypt(file, 4, &cek(4)) {
        Ok(_) => panic!("{what}: accepted"),
        Err((e, out)) => {
            assert!(check(&e), "{what}: unexpected error {e:?}");
            match first_bad_chunk {
                None => assert!(out.is_empty(), "{what}: plaintext released before the failure was found"),
                // Batches are withheld whole: at most the verified chunks before chunk i, and
                // never a byte of chunk i itself.
                Some(i) => {
                    assert!(out.len() <= i * CS && out.len() % CS == 0, "{what}: released {} bytes", out.len());
                    assert_eq!(out, plain[..out.len()], "{what}: released bytes are verified plaintext");
                }
            }
        }
    }
}

#[test]
fn the_tamper_matrix_fails_precisely_and_releases_no_plaintext() {
    // Version 2 (every byte of the collection, the document id and their lengths included)
    // and version 1.
    for make in [header, header_v1] {
        tamper_matrix(make);
    }
}

fn tamper_matrix(make: fn(u8, Algorithm) -> Header) {
    let plain = data(4 * CS + 123, 11);
    let file = encrypt_with(&plain, make(4, Algorithm::Aes256Gcm), &cek(4));
    let hlen = Header::parse(&file).expect("header").1;
    let chunk_at = |i: usize| hlen + i * (CS + 16);
    let manifest_at = chunk_at(4) + 123 + 16;
    let manifest_err = |e: &Error| matches!(e, Error::AttachmentManifest { .. });

    // A flipped bit in every header byte.
    for i in 0..hlen {
        let mut f = file.clone();
        f[i] ^= 0x01;
        must_fail(&f, &plain, None, |_| true, &format!("header byte {i}"));
    }
    // A flipped bit in each chunk's ciphertext and in its tag: that chunk fails, with its
    // index, after the chunks before it.
    for c in 0..5 {
        let len = if c == 4 { 123 } else { CS };
        for (off, part) in [(0, "ciphertext"), (len + 15, "tag")] {
            let mut f = file.clone();
            f[chunk_at(c) + off] ^= 0x80;
            must_fail(
                &f,
                &plain,
                Some(c),
                |e| matches!(e, Error::AttachmentChunk { index, .. } if *index == c as u64),
                &format!("chunk {c} {part}"),
            );
        }
    }
    // A flipped bit anywhere in the manifest.
    for i in manifest_at..file.len() {
        let mut f = file.clone();
        f[i] ^= 0x02;
        must_fail(&f, &plain, None, |_| true, &format!("manifest byte {}", i - manifest_at));
    }
    // Truncation at every chunk boundary and between boundaries.
    for cut in [hlen, chunk_at(1), chunk_at(2) + 100, manifest_at, manifest_at + 40, file.len() - 1] {
        must_fail(&file[..cut], &plain, None, |_| true, &format!("truncated at {cut}"));
    }
    // An appended chunk, trailing bytes.
    let mut f = file.clone();
    f.extend_from_slice(&file[chunk_at(0)..chunk_at(1)]);
    must_fail(&f, &plain, None, manifest_err, "appended chunk");
    let mut f = file.clone();
    f.push(0);
    must_fail(&f, &plain, None, manifest_err, "one trailing byte");
    // Two chunks swapped: caught at the first swapped chunk.
    let mut f = file.clone();
    let (c1, c2) = (file[chunk_at(1)..chunk_at(2)].to_vec(), file[chunk_at(2)..chunk_at(3)].to_vec());
    f[chunk_at(1)..chunk_at(2)].copy_from_slice(&c2);
    f[chunk_at(2)..chunk_at(3)].copy_from_slice(&c1);
    must_fail(&f, &plain, Some(1), |e| matches!(e, Error::AttachmentChunk { index: 1, .. }), "swapped chunks");
    // ... and with their manifest hashes swapped too (a server "fixing" the hash list): the
    // MAC catches it before any chunk is read.
    let mut g = f.clone();
    let h = |i: usize| manifest_at + 24 + i * 32;
    let (h1, h2) = (f[h(1)..h(1) + 32].to_vec(), f[h(2)..h(2) + 32].to_vec());
    g[h(1)..h(1) + 32].copy_from_slice(&h2);
    g[h(2)..h(2) + 32].copy_from_slice(&h1);
    must_fail(&g, &plain, None, manifest_err, "swapped chunks and hashes");
    // A chunk from another file (same key, same id, another salt) at the same position.
    let mut other_header = make(4, Algorithm::Aes256Gcm);
    other_header.salt = [0x55; 32];
    let mut e = Encryptor::new(Vec::new(), &cek(4), other_header).expect("header");
    e.write_all(&plain).expect("write");
    let other = e.finish().expect("finish").0;
    let mut f = file.clone();
    f[chunk_at(2)..chunk_at(3)].copy_from_slice(&other[chunk_at(2)..chunk_at(3)]);
    must_fail(&f, &plain, Some(2), |e| matches!(e, Error::AttachmentChunk { index: 2, .. }), "chunk from another file");
}

/// Chunks per batch at this chunk size (the encryptor's and decryptor's unit of work).
const BATCH_CHUNKS: usize = 48;

/// A reader whose reads return at most the sizes in `steps`, in turn; a vectored read fills
/// only its first buffer (the default `read_vectored`).
struct Pieces<'a> {
    data: &'a [u8],
    steps: &'a [usize],
    k: usize,
}

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.steps[self.k % self.steps.len()]).min(self.data.len());
        self.k += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn every_way_of_feeding_the_encryptor_writes_the_same_bytes() {
    let batch = BATCH_CHUNKS * CS;
    for len in [0, CS, batch - 1, batch, batch + 1, 2 * batch, 3 * batch + CS + 7] {
        let plain = data(len, 21);
        let reference = encrypt(&plain, 4, Algorithm::Aes256Gcm, &cek(4));
        let start = || Encryptor::new(Vec::new(), &cek(4), header(4, Algorithm::Aes256Gcm)).expect("header");
        let done = |e: Encryptor<Vec<u8>>| e.finish().expect("finish").0;
        // One write of everything: whole batches are sealed straight from the caller's buffer.
        let mut e = start();
        e.write_all(&plain).expect("write");
        assert!(done(e) == reference, "one write, len {len}");
        // Read from a source: a slice fills a whole batch per vectored read; a reader of
        // small pieces hands out pieces that end inside chunks or on their boundaries.
        let mut e = start();
        assert_eq!(e.read_from(&plain[..]).expect("read"), len as u64);
        assert!(done(e) == reference, "read_from, len {len}");
        for step in [1000, CS] {
            let mut e = start();
            let n = e.read_from(Pieces { data: &plain, steps: &[step], k: 0 }).expect("read");
            assert_eq!(n, len as u64);
            assert!(done(e) == reference, "read_from step {step}, len {len}");
        }
        // Mixed: a write, a flush (which writes what is sealed), a read, another write.
        let cut = (len / 3, 2 * len / 3);
        let mut e = start();
        e.write_all(&plain[..cut.0]).expect("write");
        e.flush().expect("flush");
        e.read_from(&plain[cut.0..cut.1]).expect("read");
        e.write_all(&plain[cut.1..]).expect("write");
        assert!(done(e) == reference, "mixed, len {len}");
    }
}

/// With a spill, the encryptor keeps at most HASHES_IN_MEMORY chunk hashes in memory and
/// moves the rest there as it goes; the file is the same byte for byte, written or read
/// from a source.
#[test]
fn hashes_spilled_out_of_memory_give_the_same_file() {
    let per = HASHES_IN_MEMORY * CS;
    for len in [0, CS, per - 1, per, per + 1, 2 * per + BATCH_CHUNKS * CS + 5] {
        let plain = data(len, 41);
        let reference = encrypt(&plain, 4, Algorithm::Aes256Gcm, &cek(4));
        for read in [false, true] {
            // A real file as the spill, to see what went there.
            let path = std::env::temp_dir().join(format!("fv-spill-test-{}-{len}-{read}", std::process::id()));
            let file = std::fs::File::options().read(true).write(true).create_new(true).open(&path).expect("spill");
            let mut e = Encryptor::with_spill(Vec::new(), &cek(4), header(4, Algorithm::Aes256Gcm), Box::new(file))
                .expect("header");
            if read {
                e.read_from(&plain[..]).expect("read");
            } else {
                e.write_all(&plain).expect("write");
            }
            let (file, written) = e.finish().expect("finish");
            let spilled = std::fs::metadata(&path).expect("spill").len() as usize / 32;
            std::fs::remove_file(&path).expect("remove spill");
            assert!(file == reference, "len {len}, read_from {read}");
            assert_eq!(written.file_len, file.len() as u64);
            // At most a batch over the limit stays in memory (hashes move after each batch).
            let chunks = written.chunks as usize;
            assert!(chunks - spilled < HASHES_IN_MEMORY + BATCH_CHUNKS, "{chunks} chunks, {spilled} spilled");
            assert_eq!(spilled == 0, chunks < HASHES_IN_MEMORY, "{chunks} chunks, {spilled} spilled");
        }
    }
}

/// Streams on several threads at once (each with its helper thread) each write and read
/// exactly their own bytes.
#[test]
fn streams_on_several_threads_at_once_keep_to_their_own_bytes() {
    let plain: Vec<Vec<u8>> = (0..3).map(|k| data(2 * BATCH_CHUNKS * CS + 77 * k, 31 + k as u64)).collect();
    let reference: Vec<Vec<u8>> = plain.iter().map(|p| encrypt(p, 4, Algorithm::Aes256Gcm, &cek(4))).collect();
    std::thread::scope(|sc| {
        for (p, r) in plain.iter().zip(&reference) {
            sc.spawn(move || {
                for _ in 0..3 {
                    assert!(encrypt(p, 4, Algorithm::Aes256Gcm, &cek(4)) == *r, "encrypted bytes differ");
                    assert!(decrypt(r, 4, &cek(4)).expect("decrypt") == *p, "decrypted bytes differ");
                }
            });
        }
    });
}

#[test]
fn a_tampered_chunk_in_a_later_batch_releases_exactly_the_batches_before_it() {
    let plain = data(3 * BATCH_CHUNKS * CS + 100, 23);
    let file = encrypt(&plain, 4, Algorithm::Aes256Gcm, &cek(4));
    let hlen = Header::parse(&file).expect("header").1;
    for bad in [3, BATCH_CHUNKS + 5, 2 * BATCH_CHUNKS, 3 * BATCH_CHUNKS] {
        let mut edited = file.clone();
        edited[hlen + bad * (CS + 16) + 1] ^= 0x40;
        match decrypt(&edited, 4, &cek(4)) {
            Ok(_) => panic!("chunk {bad} edited and accepted"),
            Err((e, out)) => {
                assert!(matches!(e, Error::AttachmentChunk { index, .. } if index == bad as u64), "{e:?}");
                // The batches before the bad one were verified and written; nothing after.
                let verified = bad / BATCH_CHUNKS * BATCH_CHUNKS * CS;
                assert_eq!(out.len(), verified, "chunk {bad}");
                assert!(out == plain[..verified], "chunk {bad}: released bytes are verified plaintext");
            }
        }
    }
}

#[test]
fn the_wrong_file_key_version_or_algorithm_is_named() {
    let plain = data(CS + 5, 13);
    let a = encrypt(&plain, 5, Algorithm::Aes256Gcm, &cek(5));
    // Attachment 5's file presented as attachment 6.
    let err = Decryptor::open(Cursor::new(&a), &cek(5), &[6; 16], &owner()).err().expect("mismatch");
    assert!(matches!(err, Error::AttachmentMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("0505050505050505"));
    // The wrong key.
    let err = Decryptor::open(Cursor::new(&a), &cek(6), &[5; 16], &owner()).err().expect("wrong key");
    assert!(err.to_string().contains("not the right key"), "{err}");
    // An unknown version (never read as 1 or 2), and an unknown algorithm.
    for version in [0, 3, 0xff] {
        let mut v = a.clone();
        v[4] = version;
        assert!(matches!(
            Decryptor::open(Cursor::new(&v), &cek(5), &[5; 16], &owner()),
            Err(Error::UnsupportedVersion { version: found, .. }) if found == version
        ));
    }
    let mut v = a.clone();
    v[5] = 9;
    assert!(matches!(
        Decryptor::open(Cursor::new(&v), &cek(5), &[5; 16], &owner()),
        Err(Error::UnknownCode { code: 9, .. })
    ));
}

#[test]
fn no_unkeyed_digest_of_the_plaintext_is_stored() {
    // The manifest's hashes are over ciphertext: the same plaintext under two keys gives
    // unrelated manifests, and none of them contains BLAKE3 or SHA-256 of the plaintext.
    let plain = data(2 * CS, 17);
    let a = encrypt(&plain, 7, Algorithm::Aes256Gcm, &cek(7));
    let digests = [blake3::hash(&plain).as_bytes().to_vec(), blake3::hash(&plain[..CS]).as_bytes().to_vec()];
    for d in digests {
        assert!(!a.windows(32).any(|w| w == d.as_slice()));
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn encrypt_split(plain: &[u8], splits: &[usize], algorithm: Algorithm) -> Vec<u8> {
        let mut e = Encryptor::new(Vec::new(), &cek(8), header(8, algorithm)).expect("header");
        let mut rest = plain;
        let mut k = 0;
        while !rest.is_empty() {
            let n = splits[k % splits.len()].clamp(1, rest.len());
            e.write_all(&rest[..n]).expect("write");
            rest = &rest[n..];
            k += 1;
        }
        e.finish().expect("finish").0
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any length around and across chunk boundaries, written in any pieces, under
        /// either algorithm, decrypts to itself and passes the keyless check.
        #[test]
        fn any_plaintext_in_any_pieces_round_trips(
            len in prop_oneof![0usize..3 * CS, Just(CS - 1), Just(CS), Just(CS + 1), (CS * 60)..(CS * 70)],
            splits in proptest::collection::vec(1usize..3 * CS, 1..6),
            chacha in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let algorithm = if chacha { Algorithm::ChaCha20Poly1305 } else { Algorithm::Aes256Gcm };
            let plain = data(len, seed);
            let file = encrypt_split(&plain, &splits, algorithm);
            let d = Decryptor::open(Cursor::new(&file), &cek(8), &[8; 16], &owner()).expect("open");
            let mut out = Vec::new();
            d.decrypt_to(&mut out).expect("decrypt");
            prop_assert_eq!(out, plain);
            prop_assert!(check_without_key(Cursor::new(&file)).is_ok());
        }

        /// A source read in pieces of any sizes (a reader may return less than asked, and
        /// the last piece of a batch may end anywhere) encrypts to the same bytes as one
        /// write of the whole plaintext.
        #[test]
        fn reading_a_source_in_any_pieces_writes_the_same_bytes(
            len in prop_oneof![0usize..3 * CS, (BATCH_CHUNKS * CS - 2 * CS)..(2 * BATCH_CHUNKS * CS + 2 * CS)],
            steps in proptest::collection::vec(1usize..3 * CS, 1..6),
            seed in any::<u64>(),
        ) {
            let plain = data(len, seed);
            let start = || Encryptor::new(Vec::new(), &cek(8), header(8, Algorithm::Aes256Gcm)).expect("header");
            let mut whole = start();
            whole.write_all(&plain).expect("write");
            let mut e = start();
            let mut reader = Pieces { data: &plain, steps: &steps, k: 0 };
            prop_assert_eq!(e.read_from(&mut reader).expect("read"), len as u64);
            prop_assert!(e.finish().expect("finish").0 == whole.finish().expect("finish").0);
        }

        /// Writes of any sizes, from bytes to several batches, encrypt to the same bytes as
        /// one write: whole chunks at a batch boundary are sealed straight from the caller's
        /// buffer (up to a batch, never the last chunk written so far), the rest is copied in.
        #[test]
        fn writing_in_any_pieces_writes_the_same_bytes(
            len in 0usize..(3 * BATCH_CHUNKS * CS),
            splits in proptest::collection::vec(prop_oneof![1usize..3 * CS, 1usize..(3 * BATCH_CHUNKS * CS)], 1..6),
            seed in any::<u64>(),
        ) {
            let plain = data(len, seed);
            let mut whole = Encryptor::new(Vec::new(), &cek(8), header(8, Algorithm::Aes256Gcm)).expect("header");
            whole.write_all(&plain).expect("write");
            prop_assert!(encrypt_split(&plain, &splits, Algorithm::Aes256Gcm) == whole.finish().expect("finish").0);
        }

        /// Any valid collection and document id round-trips exactly in a version 2 header,
        /// and any account name in a version 1 header; each parses to its whole length.
        #[test]
        fn any_valid_header_round_trips_in_both_versions(
            collection in "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
            doc_id in "[^\\p{Cc}]{1,100}",
            account in "[a-z0-9][a-z0-9._-]{0,63}",
            chacha in any::<bool>(),
            chunk_log2 in 12u8..=24,
            salt in any::<[u8; 32]>(),
            nonce_prefix in any::<[u8; 7]>(),
        ) {
            prop_assume!(doc_id.len() <= 256);
            let algorithm = if chacha { Algorithm::ChaCha20Poly1305 } else { Algorithm::Aes256Gcm };
            let v2 = Header {
                algorithm,
                chunk_log2,
                attachment: salt[..16].try_into().expect("16 bytes"),
                binding: Binding::Document { collection, id: doc_id },
                salt,
                nonce_prefix,
            };
            let v1 = Header { binding: Binding::Account(AccountName::new(&account).expect("valid")), ..v2.clone() };
            for h in [v2, v1] {
                prop_assert!(h.check().is_ok());
                let bytes = h.to_bytes();
                prop_assert!(bytes.len() <= Header::MAX_LEN);
                prop_assert_eq!(bytes[4], h.version());
                prop_assert_eq!(Header::parse(&bytes).expect("parses"), (h, bytes.len()));
            }
        }

        /// Any single flipped bit anywhere in the file is refused, and never yields output
        /// that differs from the plaintext.
        #[test]
        fn any_flipped_bit_is_refused(len in 0usize..3 * CS, at in any::<prop::sample::Index>(), bit in 0u8..8, seed in any::<u64>()) {
            let plain = data(len, seed);
            let mut file = encrypt_split(&plain, &[CS], Algorithm::Aes256Gcm);
            let i = at.index(file.len());
            file[i] ^= 1 << bit;
            let refused = match Decryptor::open(Cursor::new(&file), &cek(8), &[8; 16], &owner()) {
                Err(_) => true,
                Ok(d) => {
                    let mut out = Vec::new();
                    let r = d.decrypt_to(&mut out);
                    prop_assert_eq!(&out[..], &plain[..out.len()]);
                    r.is_err()
                }
            };
            prop_assert!(refused, "flip at byte {} bit {} accepted", i, bit);
        }
    }
}

/// Splits a file into header, chunks and manifest as a client uploads it.
fn split(file: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let (h, hlen) = Header::parse(file).expect("header");
    let mlen = u64::from_be_bytes(file[file.len() - 8..].try_into().expect("8 bytes")) as usize;
    let body = &file[hlen..file.len() - mlen];
    let chunks = body.chunks(h.chunk_size() + 16).map(<[u8]>::to_vec).collect();
    (file[..hlen].to_vec(), chunks, file[file.len() - mlen..].to_vec())
}

#[test]
fn a_server_checks_uploaded_chunks_against_the_manifest_without_a_key() {
    use fieldvault_core::attachment::Manifest;
    for len in [0, 1, CS - 1, CS, CS + 1, 5 * CS + 17] {
        let file = encrypt(&data(len, 9), 3, Algorithm::Aes256Gcm, &cek(3));
        let (header, chunks, manifest) = split(&file);
        let m = Manifest::parse(&header, &manifest).expect("a sound manifest");
        assert_eq!((m.count as usize, m.length as usize), (chunks.len(), len));
        // The parsed manifest and the stored bytes give the same answers.
        let stored = |i: u64, b: &[u8]| Manifest::stored_chunk_matches(&header, &manifest, i, b);
        for (i, c) in chunks.iter().enumerate() {
            assert!(m.chunk_matches(i as u64, c), "chunk {i} of {len}");
            assert!(stored(i as u64, c), "stored: chunk {i} of {len}");
            let mut bad = c.clone();
            bad[0] ^= 1;
            assert!(!m.chunk_matches(i as u64, &bad), "a flipped byte in chunk {i}");
            assert!(!stored(i as u64, &bad), "stored: a flipped byte in chunk {i}");
            assert!(!m.chunk_matches(i as u64, &c[..c.len() - 1]), "a short chunk {i}");
            assert!(!stored(i as u64, &c[..c.len() - 1]), "stored: a short chunk {i}");
        }
        assert!(!m.chunk_matches(m.count, &chunks[0]), "no chunk past the end");
        assert!(!stored(m.count, &chunks[0]), "stored: no chunk past the end");
        assert!(!stored(u64::MAX, &chunks[0]), "stored: no overflow");
        if chunks.len() > 1 {
            assert!(!m.chunk_matches(1, &chunks[0]), "chunk 0 presented as chunk 1");
            assert!(!stored(1, &chunks[0]), "stored: chunk 0 presented as chunk 1");
        }
    }
    let file = encrypt(&data(3 * CS, 1), 4, Algorithm::Aes256Gcm, &cek(4));
    let (header, _, manifest) = split(&file);
    // A changed hash no longer matches the root; a header of another file neither.
    let mut m = manifest.clone();
    m[24] ^= 1;
    assert!(matches!(Manifest::parse(&header, &m), Err(Error::AttachmentManifest { .. })));
    let (other, _, _) = split(&encrypt(&data(3 * CS, 1), 5, Algorithm::Aes256Gcm, &cek(4)));
    assert!(matches!(Manifest::parse(&other, &manifest), Err(Error::AttachmentManifest { .. })));
    // Truncated, extended, or a header with trailing bytes: refused.
    assert!(Manifest::parse(&header, &manifest[..manifest.len() - 1]).is_err());
    let mut longer = manifest.clone();
    longer.push(0);
    assert!(Manifest::parse(&header, &longer).is_err());
    let mut h2 = header.clone();
    h2.push(0);
    assert!(Manifest::parse(&h2, &manifest).is_err());
}

// ---- version 2: the owning document --------------------------------------------------

/// A version 2 header with these names (other fields fixed).
fn bound_to(collection: &str, id: &str) -> Header {
    Header {
        binding: Binding::Document { collection: collection.into(), id: id.into() },
        ..header(9, Algorithm::Aes256Gcm)
    }
}

#[test]
fn headers_encode_and_parse_exactly_in_both_versions() {
    // Version 2, byte by byte as docs/formats/attachment.md section 4 lays it out.
    let h = Header {
        algorithm: Algorithm::ChaCha20Poly1305,
        chunk_log2: 16,
        attachment: [0xa7; 16],
        binding: Binding::Document { collection: "visits".into(), id: "visit/2024-06-01 é".into() },
        salt: [0x5a; 32],
        nonce_prefix: *b"prefix!",
    };
    let id = "visit/2024-06-01 é".as_bytes();
    let mut expected = b"FVAT\x02\x02\x10\x00".to_vec();
    expected.extend_from_slice(&[0xa7; 16]);
    expected.push(6);
    expected.extend_from_slice(b"visits");
    expected.extend_from_slice(&(id.len() as u16).to_be_bytes());
    expected.extend_from_slice(id);
    expected.extend_from_slice(&[0x5a; 32]);
    expected.extend_from_slice(b"prefix!");
    assert_eq!(h.to_bytes(), expected);
    assert_eq!(expected.len(), 8 + 16 + 1 + 6 + 2 + id.len() + 39, "H = 8 + 16 + 1 + c + 2 + d + 39");
    assert_eq!(h.version(), 2);
    // Parsing gives the header back and its length, whatever follows it.
    let mut file = expected.clone();
    file.extend_from_slice(b"chunks...");
    assert_eq!(Header::parse(&file).expect("parses"), (h.clone(), expected.len()));
    // Version 1: the account where version 2 has the document.
    let v1 = Header { binding: Binding::Account(ALICE.clone()), ..h };
    let mut expected = b"FVAT\x01\x02\x10\x00".to_vec();
    expected.extend_from_slice(&[0xa7; 16]);
    expected.push(5);
    expected.extend_from_slice(b"alice");
    expected.extend_from_slice(&[0x5a; 32]);
    expected.extend_from_slice(b"prefix!");
    assert_eq!(v1.to_bytes(), expected);
    assert_eq!(expected.len(), 64 + 5, "H = 64 + a");
    assert_eq!(v1.version(), 1);
    assert_eq!(Header::parse(&expected).expect("parses"), (v1, expected.len()));
    // Every header of a shorter prefix is truncated, in both versions.
    for bytes in [bound_to("visits", "v1").to_bytes(), header_v1(1, Algorithm::Aes256Gcm).to_bytes()] {
        for cut in 0..bytes.len() {
            assert!(matches!(Header::parse(&bytes[..cut]), Err(Error::Truncated { .. })), "cut at {cut}");
        }
    }
}

#[test]
fn header_names_are_bounded_by_the_one_rule_for_names() {
    // The longest collection (64) and document id (256 bytes, here of two-byte characters)
    // make the longest header: Header::MAX_LEN.
    let longest = bound_to(&"c".repeat(64), &"é".repeat(128));
    longest.check().expect("the limits themselves are allowed");
    let bytes = longest.to_bytes();
    assert_eq!((bytes.len(), Header::MAX_LEN), (386, 386));
    assert_eq!(Header::parse(&bytes).expect("parses").0, longest);
    // A whole file with the longest header: the reader fetches MAX_LEN bytes first.
    let file = encrypt_with(b"longest", longest, &cek(3));
    let (account, collection, doc_id) = (&*ALICE, "c".repeat(64), "é".repeat(128));
    let owner = Owner { account, collection: &collection, doc_id: &doc_id };
    let mut out = Vec::new();
    Decryptor::open(Cursor::new(&file), &cek(3), &[9; 16], &owner).expect("open").decrypt_to(&mut out).expect("ok");
    assert_eq!(out, b"longest");

    // Refused when written: empty, one over, or outside the rules; nothing is written.
    for (collection, id) in [
        ("", "v1"),
        (&*"c".repeat(65), "v1"),
        ("_visits", "v1"),
        ("vi sits", "v1"),
        ("visits", ""),
        (&*"i".repeat(257), ""),
        ("visits", &*"é".repeat(129)),
        ("visits", "a\nb"),
        (&*"c".repeat(300), "v1"),
        ("visits", &*"i".repeat(70_000)),
    ] {
        let h = bound_to(collection, id);
        assert!(matches!(h.check(), Err(Error::Malformed { .. })), "{} {}", collection.len(), id.len());
        let mut out = Vec::new();
        let err = Encryptor::new(&mut out, &cek(3), h.clone()).err().expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(out.is_empty(), "nothing written for a refused header");
        // Its bytes, should anyone encode them anyway, never parse as some other header.
        assert!(Header::parse(&h.to_bytes()).is_err(), "{} {}", collection.len(), id.len());
    }

    // Refused when read: each length field at 0 and one over its limit, names outside the
    // rules, bytes that are not UTF-8.
    let good = bound_to("visits", "v1").to_bytes();
    let (c_len, d_len) = (24, 31); // offsets of len8(collection) and of the u16 id length
    assert_eq!((good[c_len], &good[d_len..d_len + 2]), (6, &[0u8, 2][..]));
    let edit = |at: usize, with: &[u8]| {
        let mut b = good.clone();
        b[at..at + with.len()].copy_from_slice(with);
        b
    };
    let mut too_long_collection = good[..c_len].to_vec();
    too_long_collection.push(65);
    too_long_collection.extend_from_slice(&[b'c'; 65]);
    too_long_collection.extend_from_slice(&good[c_len + 7..]);
    let mut too_long_id = good[..d_len].to_vec();
    too_long_id.extend_from_slice(&257u16.to_be_bytes());
    too_long_id.extend_from_slice(&[b'i'; 257]);
    too_long_id.extend_from_slice(&good[d_len + 4..]);
    for (what, bytes) in [
        ("empty collection", edit(c_len, &[0])),
        ("65-byte collection", too_long_collection),
        ("empty document id", edit(d_len, &[0, 0])),
        ("257-byte document id", too_long_id),
        ("a collection starting with _", edit(c_len + 1, b"_")),
        ("a space in the collection", edit(c_len + 3, b" ")),
        ("a control character in the id", edit(d_len + 2, b"\x07")),
        ("a collection not UTF-8", edit(c_len + 1, &[0xff])),
        ("a document id not UTF-8", edit(d_len + 2, &[0xc3])),
    ] {
        assert!(matches!(Header::parse(&bytes), Err(Error::Malformed { .. })), "{what}: {:?}", Header::parse(&bytes));
    }
}

#[test]
fn a_version_2_file_opens_only_as_its_own_document() {
    let plain = data(2 * CS + 9, 3);
    let file = encrypt(&plain, 5, Algorithm::Aes256Gcm, &cek(5));
    // The account plays no part in version 2: the file belongs to its document.
    let bob = AccountName::new("bob").expect("valid");
    let mut out = Vec::new();
    let as_bob = Owner { account: &bob, ..owner() };
    Decryptor::open(Cursor::new(&file), &cek(5), &[5; 16], &as_bob).expect("open").decrypt_to(&mut out).expect("ok");
    assert_eq!(out, plain);
    // Another document, another collection, an id that only differs in case: refused before
    // the MAC, naming what the file is and what was asked for.
    for (collection, doc_id) in [("visits", "v2"), ("notes", "v1"), ("visits", "V1"), ("Visits", "v1")] {
        let other = Owner { collection, doc_id, ..owner() };
        let err = Decryptor::open(Cursor::new(&file), &cek(5), &[5; 16], &other).err().expect("mismatch");
        let Error::AttachmentMismatch { found, expected } = &err else { panic!("{err:?}") };
        let id = "05".repeat(16);
        assert_eq!(found, &format!("{id} of document \"v1\" in \"visits\""));
        assert_eq!(expected, &format!("{id} of document {doc_id:?} in {collection:?}"));
    }
    // A version 1 file names its account, and the document plays no part.
    let v1 = encrypt_with(&plain, header_v1(5, Algorithm::Aes256Gcm), &cek(5));
    let other_doc = Owner { collection: "notes", doc_id: "n9", ..owner() };
    assert!(Decryptor::open(Cursor::new(&v1), &cek(5), &[5; 16], &other_doc).is_ok());
    let err = Decryptor::open(Cursor::new(&v1), &cek(5), &[5; 16], &as_bob).err().expect("mismatch");
    assert!(
        err.to_string().contains("of account 'alice', not") && err.to_string().ends_with("of account 'bob'"),
        "{err}"
    );
}

#[test]
fn a_file_relabelled_to_another_document_fails_its_mac_and_releases_nothing() {
    // The relabelled header names exactly the document asked for, so only the cryptographic
    // binding (the header under the MAC and in every chunk's AAD) can refuse it.
    let plain = data(3 * CS, 8);
    let file = encrypt_with(&plain, bound_to("visits", "v1"), &cek(2));
    let hlen = Header::parse(&file).expect("header").1;
    for (to, collection, doc_id) in
        [(bound_to("visitz", "v1"), "visitz", "v1"), (bound_to("visits", "v2"), "visits", "v2")]
    {
        let mut relabelled = to.to_bytes();
        assert_eq!(relabelled.len(), hlen);
        relabelled.extend_from_slice(&file[hlen..]);
        let owner = Owner { collection, doc_id, ..owner() };
        let err = Decryptor::open(Cursor::new(&relabelled), &cek(2), &[9; 16], &owner).err().expect("refused");
        assert!(matches!(err, Error::AttachmentManifest { .. }), "{err:?}");
        let (header, manifest) = (&relabelled[..hlen], &relabelled[relabelled.len() - manifest_len(&relabelled)..]);
        assert!(matches!(
            verify_manifest(header, manifest, &cek(2), &[9; 16], &owner),
            Err(Error::AttachmentManifest { .. })
        ));
    }
}

/// The manifest's length, from the file's last 8 bytes.
fn manifest_len(file: &[u8]) -> usize {
    u64::from_be_bytes(file[file.len() - 8..].try_into().expect("8 bytes")) as usize
}

#[test]
fn verify_manifest_checks_the_mac_and_the_owner_before_any_chunk() {
    for make in [header, header_v1] {
        let file = encrypt_with(&data(3 * CS + 40, 6), make(6, Algorithm::Aes256Gcm), &cek(6));
        let (head, chunks, manifest) = split(&file);
        let v = make(6, Algorithm::Aes256Gcm).version();
        // Sound: the same manifest as the keyless parse, its chunk hashes now authenticated.
        let m = verify_manifest(&head, &manifest, &cek(6), &[6; 16], &owner()).expect("verifies");
        assert_eq!(m, Manifest::parse(&head, &manifest).expect("parses"));
        assert!(chunks.iter().enumerate().all(|(i, c)| m.chunk_matches(i as u64, c)), "v{v}");
        // The wrong key.
        let err = verify_manifest(&head, &manifest, &cek(7), &[6; 16], &owner()).expect_err("wrong key");
        assert!(err.to_string().contains("not the right key"), "v{v}: {err}");
        // The MAC edited, and a chunk hash edited with the root recomputed to match (what the
        // keyless parse cannot catch).
        let mut mac_edited = manifest.clone();
        mac_edited[24 + 4 * 32 + 32 + 3] ^= 1;
        let mut forged = manifest.clone();
        forged[24 + 32 + 5] ^= 1;
        let hashes = forged[24..24 + 4 * 32].chunks(32).map(|h| h.try_into().expect("32"));
        let root = fieldvault_core::attachment::root(&head, 4, 3 * CS as u64 + 40, hashes);
        forged[24 + 4 * 32..24 + 5 * 32].copy_from_slice(&root);
        Manifest::parse(&head, &forged).expect("a consistent forgery passes the keyless parse");
        // The header edited (its salt): the root no longer matches.
        let mut salt_edited = head.clone();
        let at = salt_edited.len() - 39;
        salt_edited[at] ^= 1;
        for (what, h, m) in [("mac", &head, &mac_edited), ("forged", &head, &forged), ("salt", &salt_edited, &manifest)]
        {
            let err = verify_manifest(h, m, &cek(6), &[6; 16], &owner()).expect_err("edited");
            assert!(matches!(err, Error::AttachmentManifest { .. }), "v{v} {what}: {err:?}");
        }
        // Another attachment id, another owner.
        let err = verify_manifest(&head, &manifest, &cek(6), &[7; 16], &owner()).expect_err("other id");
        assert!(matches!(err, Error::AttachmentMismatch { .. }), "v{v}: {err:?}");
        let bob = AccountName::new("bob").expect("valid");
        let other = if v == 2 { Owner { doc_id: "v2", ..owner() } } else { Owner { account: &bob, ..owner() } };
        let err = verify_manifest(&head, &manifest, &cek(6), &[6; 16], &other).expect_err("other owner");
        assert!(matches!(err, Error::AttachmentMismatch { .. }), "v{v}: {err:?}");
    }
}

// ---- re-encryption ---------------------------------------------------------------------

/// A fresh version 2 header for attachment `id`: another salt and nonce prefix.
fn fresh_v2(id: u8, algorithm: Algorithm) -> Header {
    Header { salt: [0xee; 32], nonce_prefix: [0xdd; 7], ..header(id, algorithm) }
}

#[test]
fn reencrypting_moves_a_version_1_file_to_version_2() {
    // Several batches, so the decryptor's and the encryptor's threads both run.
    for len in [0, CS, 2 * BATCH_CHUNKS * CS + 100] {
        let plain = data(len, 12);
        let v1 = encrypt_with(&plain, header_v1(3, Algorithm::Aes256Gcm), &cek(3));
        for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
            let (v2, written) =
                reencrypt(Cursor::new(&v1), &cek(3), &[3; 16], &owner(), fresh_v2(3, algorithm), Vec::new())
                    .expect("re-encrypted");
            assert_eq!((written.file_len, written.length), (v2.len() as u64, len as u64));
            let (h, _) = Header::parse(&v2).expect("header");
            assert_eq!(h, fresh_v2(3, algorithm), "the new header, version 2");
            assert_eq!(decrypt(&v2, 3, &cek(3)).expect("the new file decrypts"), plain, "{len} {algorithm:?}");
            assert_eq!(check_without_key(Cursor::new(&v2)).expect("checks").2, written.root);
            // Byte for byte what encrypting the plaintext afresh under that header gives.
            assert!(v2 == encrypt_with(&plain, fresh_v2(3, algorithm), &cek(3)), "{len} {algorithm:?}");
        }
    }
    // Version 2 to version 2 (new salt) works the same.
    let plain = data(CS + 1, 2);
    let a = encrypt(&plain, 3, Algorithm::Aes256Gcm, &cek(3));
    let (b, _) = reencrypt(Cursor::new(&a), &cek(3), &[3; 16], &owner(), fresh_v2(3, Algorithm::Aes256Gcm), Vec::new())
        .expect("re-encrypted");
    assert_eq!(decrypt(&b, 3, &cek(3)).expect("decrypts"), plain);
}

#[test]
fn reencrypting_a_tampered_source_fails_and_leaves_no_readable_output() {
    let plain = data(3 * BATCH_CHUNKS * CS + 100, 14);
    let v1 = encrypt_with(&plain, header_v1(3, Algorithm::Aes256Gcm), &cek(3));
    let hlen = Header::parse(&v1).expect("header").1;
    for bad in [0, BATCH_CHUNKS + 5, 3 * BATCH_CHUNKS] {
        let mut src = v1.clone();
        src[hlen + bad * (CS + 16) + 7] ^= 0x20;
        // Output owned by the call is dropped with the error: the caller keeps nothing.
        let err =
            reencrypt(Cursor::new(&src), &cek(3), &[3; 16], &owner(), fresh_v2(3, Algorithm::Aes256Gcm), Vec::new())
                .expect_err("a tampered chunk");
        assert!(matches!(err, Error::AttachmentChunk { index, .. } if index == bad as u64), "{err:?}");
        // Output the caller lends (a temporary file, say) holds at most an incomplete file:
        // no manifest, which no reader opens, and which the caller discards.
        let mut out = Vec::new();
        let err =
            reencrypt(Cursor::new(&src), &cek(3), &[3; 16], &owner(), fresh_v2(3, Algorithm::Aes256Gcm), &mut out)
                .expect_err("a tampered chunk");
        assert!(matches!(err, Error::AttachmentChunk { .. }), "{err:?}");
        assert!(Decryptor::open(Cursor::new(&out), &cek(3), &[3; 16], &owner()).is_err(), "chunk {bad}");
        assert!(check_without_key(Cursor::new(&out)).is_err(), "chunk {bad}");
    }
}

#[test]
fn reencrypting_refuses_a_reused_salt_or_another_identity_before_writing() {
    let v1 = encrypt_with(&data(CS, 1), header_v1(3, Algorithm::Aes256Gcm), &cek(3));
    let bob = AccountName::new("bob").expect("valid");
    type Case<'a> = (&'a str, Header, Owner<'a>, &'a [u8; 16], fn(&Error) -> bool);
    let cases: [Case<'_>; 5] = [
        ("the source's salt", header(3, Algorithm::Aes256Gcm), owner(), &[3; 16], |e| {
            matches!(e, Error::Malformed { .. })
        }),
        ("another document", Header { ..bound_to("visits", "v2") }, owner(), &[9; 16], |e| {
            matches!(e, Error::AttachmentMismatch { .. })
        }),
        ("another attachment id", fresh_v2(4, Algorithm::Aes256Gcm), owner(), &[3; 16], |e| {
            matches!(e, Error::AttachmentMismatch { .. })
        }),
        (
            "a source of another account",
            fresh_v2(3, Algorithm::Aes256Gcm),
            Owner { account: &bob, ..owner() },
            &[3; 16],
            |e| matches!(e, Error::AttachmentMismatch { .. }),
        ),
        (
            "an invalid new header",
            Header { chunk_log2: 30, ..fresh_v2(3, Algorithm::Aes256Gcm) },
            owner(),
            &[3; 16],
            |e| matches!(e, Error::Malformed { .. }),
        ),
    ];
    for (what, new_header, owner, id, expected) in cases {
        let mut out = Vec::new();
        let err = reencrypt(Cursor::new(&v1), &cek(3), id, &owner, new_header, &mut out).expect_err(what);
        assert!(expected(&err), "{what}: {err:?}");
        assert!(out.is_empty(), "{what}: nothing written");
    }
    // The wrong key: the source's MAC.
    let mut out = Vec::new();
    let err = reencrypt(Cursor::new(&v1), &cek(4), &[3; 16], &owner(), fresh_v2(3, Algorithm::Aes256Gcm), &mut out)
        .expect_err("wrong key");
    assert!(matches!(err, Error::AttachmentManifest { .. }) && out.is_empty(), "{err:?}");
}
