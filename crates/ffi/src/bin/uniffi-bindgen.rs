//! `uniffi-bindgen generate --library target/debug/libfieldvault_ffi.so --language python|kotlin|swift --out-dir DIR`
fn main() {
    uniffi::uniffi_bindgen_main()
}
