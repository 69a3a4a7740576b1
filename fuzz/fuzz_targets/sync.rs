//! Push ops, attachment manifests as the server receives them, and cursors, on arbitrary
//! bytes: errors, never a panic; stable fingerprints.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fieldvault_core::fuzzing::sync(data));
