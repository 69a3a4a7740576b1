//! SQLCipher 4 settings shared by every encrypted SQLite file of the project: the client's
//! per-account databases and the server's embedded store. Strings only, no IO: the crates
//! that open databases apply them. `docs/formats/database.md` gives each one's reason.

use zeroize::Zeroizing;

/// The cipher settings, applied right after the key and before the first read. Chosen, not
/// defaulted, so a SQLCipher upgrade that changes a default cannot change a file.
pub const CIPHER_SETTINGS: &[(&str, &str)] = &[
    ("cipher_page_size", "8192"),
    // Unused with a raw key, but set so every SQLCipher 4 setting is pinned.
    ("kdf_iter", "256000"),
    ("cipher_kdf_algorithm", "PBKDF2_HMAC_SHA512"),
    // SHA-256 runs in hardware (SHA-NI) here, SHA-512 does not: same 256-bit strength,
    // inserts 1.41x plain SQLite instead of 1.62x (DEPENDENCIES.md).
    ("cipher_hmac_algorithm", "HMAC_SHA256"),
    ("cipher_use_hmac", "ON"),
    ("cipher_plaintext_header_size", "0"),
];

/// The first 16 bytes of an unencrypted SQLite file. An encrypted file never starts so.
pub const PLAINTEXT_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// `PRAGMA <schema>.key = "x'<64 hex>'";` (a raw key: no PBKDF2), in zeroized memory.
pub fn key_pragma(schema: &str, key: &[u8; 32]) -> Zeroizing<String> {
    let mut sql = Zeroizing::new(String::with_capacity(96));
    sql.push_str("PRAGMA ");
    sql.push_str(schema);
    sql.push_str(".key = \"x'");
    for b in key {
        sql.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        sql.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    sql.push_str("'\";");
    sql
}

/// Every [`CIPHER_SETTINGS`] entry as one batch of `PRAGMA <schema>.name = value;`.
pub fn cipher_settings_sql(schema: &str) -> String {
    CIPHER_SETTINGS.iter().map(|(name, value)| format!("PRAGMA {schema}.{name} = {value};")).collect()
}

/// Every [`CIPHER_SETTINGS`] entry as SQLCipher's process-wide default
/// (`PRAGMA cipher_default_<name> = value;`, the `cipher_` prefix of a name not repeated):
/// the settings a codec starts from when a connection is keyed, so that a connection to an
/// existing file needs no statement of its own. The values are the same table's.
pub fn cipher_default_settings_sql() -> String {
    CIPHER_SETTINGS
        .iter()
        .map(|(name, value)| format!("PRAGMA cipher_default_{} = {value};", name.trim_start_matches("cipher_")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pragma_is_the_raw_key_in_hex() {
        let mut k = [0u8; 32];
        k[0] = 0xab;
        k[31] = 0x01;
        let sql = key_pragma("main", &k);
        assert_eq!(sql.as_str(), format!("PRAGMA main.key = \"x'ab{}01'\";", "00".repeat(30)));
    }

    #[test]
    fn process_defaults_name_every_cipher_setting_with_its_value() {
        assert_eq!(
            cipher_default_settings_sql(),
            "PRAGMA cipher_default_page_size = 8192;PRAGMA cipher_default_kdf_iter = 256000;\
             PRAGMA cipher_default_kdf_algorithm = PBKDF2_HMAC_SHA512;\
             PRAGMA cipher_default_hmac_algorithm = HMAC_SHA256;PRAGMA cipher_default_use_hmac = ON;\
             PRAGMA cipher_default_plaintext_header_size = 0;"
        );
    }
}
