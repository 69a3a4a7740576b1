//! Key file, wrapped key and vault marker parsers on arbitrary bytes: no panic, exact round trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldvault_core::fuzzing::key_records(data));
