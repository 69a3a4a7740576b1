//! A document body from text: a JSON object in which no object names a key twice.
//!
//! serde_json keeps the last value of a repeated key (`{"a":1,"a":2}` is `{"a":2}`), other
//! JSON parsers keep the first or refuse, so such a text does not mean one thing everywhere.
//! A document must mean the same on every device and on the server, so a body naming a key
//! twice, at any depth, is refused where it enters (keys compare after unescaping: `"a"` and
//! `"\u0061"` are the same key). The order of an object's keys is not kept: a document is
//! stored and sent with its keys sorted.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text` as JSON, refusing an object that names a key twice at any depth.
///
/// # Errors
/// serde_json's error, with the line and column, for malformed JSON or a repeated key (the
/// message names the key, shortened to 40 characters).
pub fn parse_unique_keys(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = UniqueKeys.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`] as serde_json does, refusing a repeated key.
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // What serde_json's own `Value` does: JSON text has no NaN or infinity.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(UniqueKeys)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(40).collect();
                return Err(de::Error::custom(format_args!(
                    "the key {shown:?} appears twice in one object (a document must mean one thing on every device)"
                )));
            }
            let value = map.next_value_seed(UniqueKeys)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_key_named_twice_at_any_depth_is_refused_with_its_position() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":1,"c":1}}"#,
            r#"{"list":[{"x":1},{"x":1,"x":1}]}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let err = parse_unique_keys(text).expect_err(text).to_string();
            assert!(err.contains("appears twice in one object") && err.contains("column"), "{text}: {err}");
        }
    }

    #[test]
    fn valid_json_parses_as_serde_json_parses_it() {
        for text in [
            r#"{"patient":"Ada","bp":[120,80],"n":-1.5e3,"big":18446744073709551615,"z":null,"t":true}"#,
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}"#,
            r#"[1,"x",{"k":"v"}]"#,
            "\"text\"",
        ] {
            let plain: Value = serde_json::from_str(text).expect("valid");
            assert_eq!(parse_unique_keys(text).expect(text), plain, "{text}");
        }
        assert_eq!(parse_unique_keys(r#"{"b":1,"a":2}"#).expect("valid").to_string(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn malformed_json_and_trailing_text_are_refused() {
        for text in ["{", r#"{"a":1} x"#, r#"{"a":1,}"#, ""] {
            assert!(parse_unique_keys(text).is_err(), "{text}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_unique_keys(&deep).is_err(), "serde_json's depth limit holds");
        assert_eq!(parse_unique_keys("[[1]]").expect("shallow"), json!([[1]]));
    }
}
