//! Attachment stream throughput, beside the raw one-shot AEAD of the same library, in one
//! run. Modes:
//!   attachment memory [MiB]          encrypt and decrypt from memory to a sink
//!   attachment encrypt IN OUT        file to file (for peak RSS, run under /usr/bin/time)
//!   attachment decrypt IN OUT
//! Prints `figure NAME VALUE UNIT`. Driven by `bench/attachment.sh`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Write};
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use fieldvault_core::attachment::{Algorithm, DEFAULT_CHUNK_LOG2, Decryptor, Encryptor, Header};
use fieldvault_core::{AccountName, ContentKey};
use zeroize::Zeroizing;

fn header() -> Header {
    Header {
        algorithm: Algorithm::Aes256Gcm,
        chunk_log2: DEFAULT_CHUNK_LOG2,
        attachment: [7; 16],
        account: AccountName::new("bench").expect("valid"),
        salt: [1; 32],
        nonce_prefix: [2; 7],
    }
}

fn cek() -> ContentKey {
    ContentKey::from_bytes(Zeroizing::new([9; 32]))
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn memory(mib: u64) {
    let total = mib << 20;
    let block: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    // Raw one-shot AES-256-GCM over the same bytes, in 64 MiB calls.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[3; 32]).expect("key"));
    let mut buf = block.clone();
    let t = Instant::now();
    let mut done = 0u64;
    let mut n = 0u32;
    while done < total {
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&n.to_be_bytes());
        let tag =
            key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf).expect("seal");
        let _ = std::hint::black_box(tag);
        done += buf.len() as u64;
        n += 1;
    }
    let raw = gbps(done, t.elapsed().as_secs_f64());

    // Encrypt: memory to a sink.
    let t = Instant::now();
    let mut enc = Encryptor::new(std::io::sink(), &cek(), header()).expect("header");
    let mut done = 0u64;
    while done < total {
        enc.write_all(&block).expect("write");
        done += block.len() as u64;
    }
    enc.finish().expect("finish");
    let enc_speed = gbps(total, t.elapsed().as_secs_f64());

    // Decrypt: from memory (encrypted, untimed, into a buffer faulted in beforehand) to a sink.
    let mut file = vec![0u8; (total + (total >> 10) + (1 << 20)) as usize];
    let mut enc = Encryptor::new(Cursor::new(&mut file[..]), &cek(), header()).expect("header");
    let mut done = 0u64;
    while done < total {
        enc.write_all(&block).expect("write");
        done += block.len() as u64;
    }
    let (_, written) = enc.finish().expect("finish");
    file.truncate(written.file_len as usize);
    let t = Instant::now();
    let dec = Decryptor::open(Cursor::new(&file), &cek(), &[7; 16], &header().account).expect("open");
    let v = dec.decrypt_to(std::io::sink()).expect("decrypt");
    assert_eq!(v.length, total);
    let dec_speed = gbps(total, t.elapsed().as_secs_f64());

    println!("figure attachment_raw_aes256gcm {raw:.3} GB/s");
    println!("figure attachment_encrypt_memory {enc_speed:.3} GB/s");
    println!("figure attachment_decrypt_memory {dec_speed:.3} GB/s");
    println!("figure attachment_encrypt_vs_raw {:.3} x", enc_speed / raw);
    println!("figure attachment_decrypt_vs_raw {:.3} x", dec_speed / raw);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("encrypt") => {
            // The encryptor writes whole 4 MiB batches: no output buffer needed.
            let input = BufReader::with_capacity(1 << 20, File::open(&args[1]).expect("input"));
            let out = File::create(&args[2]).expect("output");
            let mut enc = Encryptor::new(out, &cek(), header()).expect("header");
            let mut input = input;
            std::io::copy(&mut input, &mut enc).expect("encrypt");
            enc.finish().expect("finish");
        }
        Some("decrypt") => {
            // The decryptor reads whole batches; its output is written chunk by chunk.
            let file = File::open(&args[1]).expect("input");
            let out = BufWriter::with_capacity(1 << 20, File::create(&args[2]).expect("output"));
            Decryptor::open(file, &cek(), &[7; 16], &header().account).expect("open").decrypt_to(out).expect("decrypt");
        }
        Some("parts") => {
            let buf: Vec<u8> = (0..(1u32 << 16) + 16).map(|i| (i % 251) as u8).collect();
            let n = 16384u64;
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(blake3::hash(&buf));
            }
            println!("blake3 64K: {:.2} GB/s", gbps(n << 16, t.elapsed().as_secs_f64()));
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[3; 32]).expect("key"));
            let mut b = buf[..1 << 16].to_vec();
            let t = Instant::now();
            for i in 0..n {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&i.to_be_bytes());
                let _ = std::hint::black_box(key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&[0u8; 80][..]),
                    &mut b,
                ));
            }
            println!("aes-gcm 64K: {:.2} GB/s", gbps(n << 16, t.elapsed().as_secs_f64()));
            let t = Instant::now();
            std::thread::scope(|sc| {
                for _ in 0..2 {
                    sc.spawn(|| {
                        for _ in 0..n {
                            std::hint::black_box(blake3::hash(&buf));
                        }
                    });
                }
            });
            println!("blake3 64K, two threads: {:.2} GB/s total", gbps(2 * (n << 16), t.elapsed().as_secs_f64()));
            let both = |b: &mut Vec<u8>| {
                for i in 0..n {
                    let mut nonce = [0u8; 12];
                    nonce[..8].copy_from_slice(&i.to_be_bytes());
                    let tag = key
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&[0u8; 80][..]),
                            &mut b[..],
                        )
                        .expect("seal");
                    let _ = std::hint::black_box(tag);
                    std::hint::black_box(blake3::hash(b));
                }
            };
            let t = Instant::now();
            both(&mut buf[..1 << 16].to_vec());
            println!("aes-gcm + blake3 64K, one thread: {:.2} GB/s", gbps(n << 16, t.elapsed().as_secs_f64()));
            let t = Instant::now();
            std::thread::scope(|sc| {
                for _ in 0..2 {
                    sc.spawn(|| both(&mut buf[..1 << 16].to_vec()));
                }
            });
            println!(
                "aes-gcm + blake3 64K, two threads: {:.2} GB/s total",
                gbps(2 * (n << 16), t.elapsed().as_secs_f64())
            );
        }
        Some("memory") => memory(args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1024)),
        _ => memory(1024),
    }
}
