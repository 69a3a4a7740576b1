//! The attachment format end to end: round trips across chunk boundaries and a tamper
//! matrix where every edit fails with a precise error and releases no plaintext.

use std::io::{Cursor, Write};

use fieldvault_core::attachment::{Algorithm, Decryptor, Encryptor, HASHES_IN_MEMORY, Header, check_without_key};
use fieldvault_core::{AccountName, ContentKey, Error};
use zeroize::Zeroizing;

const CS: usize = 4096; // 2^12, the smallest chunk size: many chunks from little data

fn account() -> AccountName {
    AccountName::new("alice").expect("valid")
}

fn header(id: u8, algorithm: Algorithm) -> Header {
    Header {
        algorithm,
        chunk_log2: 12,
        attachment: [id; 16],
        account: account(),
        salt: [id.wrapping_add(1); 32],
        nonce_prefix: [id.wrapping_add(2); 7],
    }
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
    let mut e = Encryptor::new(Vec::new(), key, header(id, algorithm)).expect("header");
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
    let d = Decryptor::open(Cursor::new(file), key, &[id; 16], &account()).map_err(|e| (e, Vec::new()))?;
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
fn round_trips_at_every_chunk_boundary_for_both_algorithms() {
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        for len in [0, 1, CS - 1, CS, CS + 1, 2 * CS, 5 * CS + 17, 40 * CS] {
            let plain = data(len, len as u64 + 3);
            let file = encrypt(&plain, 1, algorithm, &cek(9));
            assert_eq!(decrypt(&file, 1, &cek(9)).expect("decrypts"), plain, "{algorithm:?} {len}");
            let (h, length, _root) =
                check_without_key(Cursor::new(&file)).expect("a server can check it without a key");
            assert_eq!((h.algorithm, length), (algorithm, len as u64));
        }
    }
}

#[test]
fn random_access_returns_any_chunk_alone() {
    let plain = data(7 * CS + 100, 5);
    let file = encrypt(&plain, 2, Algorithm::Aes256Gcm, &cek(1));
    let mut d = Decryptor::open(Cursor::new(&file), &cek(1), &[2; 16], &account()).expect("open");
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
    let plain = data(4 * CS + 123, 11);
    let file = encrypt(&plain, 4, Algorithm::Aes256Gcm, &cek(4));
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
    let mut other_header = header(4, Algorithm::Aes256Gcm);
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
    let err = Decryptor::open(Cursor::new(&a), &cek(5), &[6; 16], &account()).err().expect("mismatch");
    assert!(matches!(err, Error::AttachmentMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("0505050505050505"));
    // The wrong key.
    let err = Decryptor::open(Cursor::new(&a), &cek(6), &[5; 16], &account()).err().expect("wrong key");
    assert!(err.to_string().contains("not the right key"), "{err}");
    // An unknown version and an unknown algorithm.
    let mut v = a.clone();
    v[4] = 2;
    assert!(matches!(
        Decryptor::open(Cursor::new(&v), &cek(5), &[5; 16], &account()),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    let mut v = a.clone();
    v[5] = 9;
    assert!(matches!(
        Decryptor::open(Cursor::new(&v), &cek(5), &[5; 16], &account()),
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
            let d = Decryptor::open(Cursor::new(&file), &cek(8), &[8; 16], &account()).expect("open");
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

        /// Any single flipped bit anywhere in the file is refused, and never yields output
        /// that differs from the plaintext.
        #[test]
        fn any_flipped_bit_is_refused(len in 0usize..3 * CS, at in any::<prop::sample::Index>(), bit in 0u8..8, seed in any::<u64>()) {
            let plain = data(len, seed);
            let mut file = encrypt_split(&plain, &[CS], Algorithm::Aes256Gcm);
            let i = at.index(file.len());
            file[i] ^= 1 << bit;
            let refused = match Decryptor::open(Cursor::new(&file), &cek(8), &[8; 16], &account()) {
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
