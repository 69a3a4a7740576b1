//! The Swift bindings generate (there is no Swift toolchain here to compile them): the
//! module, its C header and module map, with the facade's types in them.

use crate::foreign::generate;

#[test]
fn the_swift_bindings_generate() {
    let tmp = tempfile::tempdir().expect("tempdir");
    generate("swift", tmp.path());
    let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let swift = read("Fieldvault.swift");
    for needle in
        ["class Vault", "protocol Keystore", "func sync(merger: ConflictMerger?) async throws", "enum FieldvaultError"]
    {
        assert!(swift.contains(needle), "Fieldvault.swift lacks {needle:?}");
    }
    assert!(read("FieldvaultFFI.h").contains("uniffi_fieldvault_ffi_fn_method_vault_put"));
    assert!(read("FieldvaultFFI.modulemap").contains("FieldvaultFFI"));
}
