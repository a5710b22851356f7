//! Typed, borrowing reads of the JSON a response carries, exactly as lenient as reading it into a
//! `serde_json::Value` first and looking fields up in that.
//!
//! Why: parsing every streamed event into a `Value` (a map with an owned key and value for every
//! field, then thrown away) was most of what capture cost per response (issue 17, callgrind in
//! docs/provenance.md, "Capture cost"). The readers in `formats.rs` now declare the few fields
//! they use ([`fields!`]); strings borrow from the event unless they hold escapes, and everything
//! else is stepped over without being built.
//!
//! What must not change is which frames count as malformed and what a frame yields, so each type
//! here behaves as the `Value` lookup it replaced:
//! - A value of the wrong type (a number where a string belongs, `null` where an object belongs)
//!   is the field's default (`""`, `0`, empty), as `Value::as_str` and friends gave `None`.
//!   Nothing here returns an error of its own, so a frame fails only where `Value` failed.
//! - Everything is read through `deserialize_any`, the entry `Value` uses, and skipped fields
//!   through [`Skip`], which visits every value rather than `IgnoredAny`'s skimming: so strings
//!   are UTF-8- and escape-checked, numbers range-checked and nesting depth-limited as before
//!   (`IgnoredAny` checks none of those).
//! - A repeated key: the last one wins, as in a `Value` map.
//! - With serde_json's `raw_value` feature (on in this crate), `Value` reads an object whose
//!   first key is serde_json's private raw-value token as the JSON text in that key's string;
//!   [`read_map`] does the same.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// serde_json's private key for a raw value (`serde_json::raw::TOKEN`, not exported).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// An object this reader knows some fields of: `slot` numbers a key it wants, `read` reads the
/// value of that slot. Declared with [`fields!`].
pub(super) trait Fields<'de>: Default {
    fn slot(key: &str) -> Option<u8>;
    fn read<A: MapAccess<'de>>(&mut self, slot: u8, map: &mut A) -> Result<(), A::Error>;
}

/// Declares a struct of the fields one reader needs, by JSON key, each a lenient type of this
/// module (or `Value`); every other key is skipped. Missing keys keep the field's default.
macro_rules! fields {
    ($(#[$meta:meta])* struct $name:ident<$de:lifetime> { $($key:literal => $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        pub(super) struct $name<$de> {
            $(pub(super) $field: $ty,)*
            _borrows: ::std::marker::PhantomData<&$de ()>,
        }

        impl<$de> $crate::provenance::json::Fields<$de> for $name<$de> {
            fn slot(key: &str) -> Option<u8> {
                #[expect(non_camel_case_types, reason = "one variant per field, named as it")]
                enum Slot {
                    $($field,)*
                }
                match key {
                    $($key => Some(Slot::$field as u8),)*
                    _ => None,
                }
            }

            fn read<A: ::serde::de::MapAccess<$de>>(
                &mut self,
                slot: u8,
                map: &mut A,
            ) -> Result<(), A::Error> {
                #[expect(non_camel_case_types, reason = "one variant per field, named as it")]
                enum Slot {
                    $($field,)*
                }
                $(
                    if slot == Slot::$field as u8 {
                        self.$field = map.next_value()?;
                    }
                )*
                Ok(())
            }
        }
    };
}
pub(super) use fields;

/// Any JSON value, checked as `Value` checks it and dropped.
pub(super) struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

#[derive(Default)]
struct SkipVisitor;

/// The visitor methods of the JSON types a lenient type does not want: the value is read (and
/// so checked) and the type's default is the result.
macro_rules! otherwise_default {
    (scalars) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            match read_map(map, |_| None, |_, _: &mut A| Ok(()))? {
                None => Ok(Default::default()),
                Some(v) => Self::Value::deserialize(v).map_err(de::Error::custom),
            }
        }
    };
}

impl Default for Skip {
    fn default() -> Self {
        Skip
    }
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    otherwise_default!(scalars);
    otherwise_default!(str);
    otherwise_default!(seq);
    otherwise_default!(map);
}

/// A string field: `""` when absent or not a string (`Value::as_str(..).unwrap_or("")`).
/// Borrowed from the event unless it had escapes to undo.
#[derive(Default)]
pub(super) struct Str<'de>(Cow<'de, str>);

impl Str<'_> {
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Borrowed(s)))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(s)))
    }

    otherwise_default!(scalars);
    otherwise_default!(seq);
    otherwise_default!(map);
}

/// An index field: 0 when absent or not a non-negative integer (`Value::as_u64(..)
/// .unwrap_or(0)`; a float such as `1.0` is not one).
#[derive(Default, Clone, Copy)]
pub(super) struct Uint(pub(super) u64);

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UintVisitor)
    }
}

struct UintVisitor;

impl<'de> Visitor<'de> for UintVisitor {
    type Value = Uint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Uint(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Uint(u64::try_from(v).unwrap_or(0)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Uint(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Uint(0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Uint(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Uint(0))
    }

    otherwise_default!(str);
    otherwise_default!(seq);
    otherwise_default!(map);
}

/// A flag field: true only for JSON `true` (`Value::as_bool(..) == Some(true)`).
#[derive(Default, Clone, Copy)]
pub(super) struct Flag(pub(super) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FlagVisitor)
    }
}

struct FlagVisitor;

impl<'de> Visitor<'de> for FlagVisitor {
    type Value = Flag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Flag(v))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Flag(false))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Flag(false))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Flag(false))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Flag(false))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Flag(false))
    }

    otherwise_default!(str);
    otherwise_default!(seq);
    otherwise_default!(map);
}

/// A field whose presence matters even when its value is `null` or of the wrong type
/// (`Value::get(key).is_some()`): Chat's `reasoning_content` shadows `reasoning` whenever it is
/// there, and a Gemini candidate's `index` replaces its position whenever it is there.
pub(super) struct Seen<T>(pub(super) Option<T>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Seen<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|t| Seen(Some(t)))
    }
}

/// An array field: empty when absent or not an array; each element read as `T` (so an element
/// of the wrong type is `T`'s default, and still counts as a position).
pub(super) struct List<T>(pub(super) Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor(PhantomData))
    }
}

struct ListVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List(items))
    }

    otherwise_default!(scalars);
    otherwise_default!(str);
    otherwise_default!(map);
}

/// An object field of the type `T` declares: all defaults when absent or not an object.
#[derive(Default)]
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Fields<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjVisitor(PhantomData))
    }
}

struct ObjVisitor<T>(PhantomData<T>);

impl<'de, T: Fields<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut fields = T::default();
        match read_map(map, T::slot, |slot, map| fields.read(slot, map))? {
            None => Ok(Obj(fields)),
            Some(v) => Obj::<T>::deserialize(v).map_err(de::Error::custom),
        }
    }

    otherwise_default!(scalars);
    otherwise_default!(str);
    otherwise_default!(seq);
}

/// A key, told apart by [`KeySeed`].
enum Key {
    /// The first key is serde_json's raw-value token, read from the text.
    RawValue,
    /// A key, and its slot if the reader wants it.
    Field(Option<u8>),
}

struct KeySeed {
    first: bool,
    slot: fn(&str) -> Option<u8>,
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    /// A key as the parser reads it from the text (borrowed, or unescaped into its scratch).
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        if self.first && key == RAW_VALUE_TOKEN {
            return Ok(Key::RawValue);
        }
        Ok(Key::Field((self.slot)(key)))
    }

    /// A key of an owned `Value` (re-reading a raw value's text, below): by then it is an
    /// ordinary key, as it is in that `Value`'s map.
    fn visit_string<E: de::Error>(self, key: String) -> Result<Key, E> {
        Ok(Key::Field((self.slot)(&key)))
    }
}

/// Reads an object's entries: `read(slot, map)` for each key `slot` wants, [`Skip`] for the
/// others. `Some(value)` when the object is serde_json's raw-value form instead: the caller reads
/// itself again from that value.
pub(super) fn read_map<'de, A, F>(
    mut map: A,
    slot: fn(&str) -> Option<u8>,
    mut read: F,
) -> Result<Option<Value>, A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(u8, &mut A) -> Result<(), A::Error>,
{
    let mut first = true;
    while let Some(key) = map.next_key_seed(KeySeed { first, slot })? {
        first = false;
        match key {
            Key::RawValue => return raw_value(map).map(Some),
            Key::Field(Some(s)) => read(s, &mut map)?,
            Key::Field(None) => {
                map.next_value::<Skip>()?;
            }
        }
    }
    Ok(None)
}

/// What `Value` makes of `{"<token>": "<JSON text>"}`: that text, parsed on its own. The value
/// must be a string and the only entry, as for `Value` (whose parser then expects the `}`).
fn raw_value<'de, A: MapAccess<'de>>(mut map: A) -> Result<Value, A::Error> {
    let text: String = map.next_value()?;
    if map.next_key::<Skip>()?.is_some() {
        return Err(de::Error::custom(
            "an object in serde_json's raw-value form has one entry",
        ));
    }
    serde_json::from_str(&text).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fields! {
        struct Probe<'de> {
            "s" => s: Str<'de>,
            "n" => n: Uint,
            "b" => b: Flag,
            "seen" => seen: Seen<Str<'de>>,
            "list" => list: List<Obj<Inner<'de>>>,
            "obj" => obj: Obj<Inner<'de>>,
            "value" => value: Value,
        }
    }

    fields! {
        struct Inner<'de> {
            "s" => s: Str<'de>,
        }
    }

    fn probe(json: &str) -> Result<Obj<Probe<'_>>, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Both readers accept exactly the same documents.
    fn same_acceptance(json: &str) {
        assert_eq!(
            probe(json).is_ok(),
            serde_json::from_str::<Value>(json).is_ok(),
            "{json}"
        );
    }

    #[test]
    fn strings_borrow_unless_escaped_and_wrong_types_are_empty() {
        let p = probe(r#"{"s": "plain"}"#).unwrap().0;
        assert!(matches!(p.s.0, Cow::Borrowed("plain")));
        let p = probe(r#"{"s": "a\"b\u00e9\n"}"#).unwrap().0;
        assert_eq!(p.s.as_str(), "a\"bé\n");
        for wrong in ["5", "null", "true", "[\"x\"]", "{\"s\": \"x\"}", "-1.5"] {
            let text = format!(r#"{{"s": {wrong}}}"#);
            let p = probe(&text).unwrap().0;
            assert_eq!(p.s.as_str(), "", "{wrong}");
        }
    }

    #[test]
    fn indices_are_non_negative_integers_else_zero() {
        for (json, want) in [
            ("7", 7),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551616", 0),
            ("-1", 0),
            ("-0", 0),
            ("1.0", 0),
            ("1e2", 0),
            ("\"3\"", 0),
            ("null", 0),
        ] {
            let text = format!(r#"{{"n": {json}}}"#);
            let p = probe(&text).unwrap().0;
            let old = serde_json::from_str::<Value>(json)
                .unwrap()
                .as_u64()
                .unwrap_or(0);
            assert_eq!((p.n.0, old), (want, want), "{json}");
        }
    }

    #[test]
    fn presence_is_kept_apart_from_the_value() {
        let p = probe(r#"{"seen": null}"#).unwrap().0;
        assert_eq!(p.seen.0.map(|s| s.0.into_owned()), Some(String::new()));
        assert!(probe("{}").unwrap().0.seen.0.is_none());
        assert!(probe(r#"{"b": true}"#).unwrap().0.b.0);
        assert!(!probe(r#"{"b": "true"}"#).unwrap().0.b.0);
    }

    #[test]
    fn the_last_of_repeated_keys_wins_even_when_it_is_the_wrong_type() {
        let p = probe(r#"{"s": "one", "s": "two"}"#).unwrap().0;
        assert_eq!(p.s.as_str(), "two");
        let p = probe(r#"{"s": "one", "s": 2}"#).unwrap().0;
        assert_eq!(p.s.as_str(), "");
    }

    #[test]
    fn non_objects_and_non_arrays_are_defaults() {
        for top in ["[]", "[1, {\"s\": \"x\"}]", "\"s\"", "3", "null", "false"] {
            assert_eq!(probe(top).unwrap().0.s.as_str(), "", "{top}");
        }
        let p = probe(r#"{"list": [1, null, {"s": "third"}], "obj": [1]}"#)
            .unwrap()
            .0;
        let seen: Vec<&str> = p.list.0.iter().map(|o| o.0.s.as_str()).collect();
        assert_eq!(seen, ["", "", "third"]);
        assert_eq!(p.obj.0.s.as_str(), "");
    }

    #[test]
    fn skipped_fields_are_checked_as_a_value_checks_them() {
        // Each is wrong only inside a field the reader skips; `IgnoredAny` would pass them all.
        let cases = [
            "{\"x\": \"\\ud800\"}",
            "{\"x\": \"\\ud800\\u0041\"}",
            "{\"x\": \"\\udc00\"}",
            "{\"x\": \"\\ud83d\\ude00\"}",
            "{\"x\": 1e400}",
            "{\"x\": -1e400}",
            "{\"x\": 1e308}",
            "{\"x\": \"tab\there\"}",
            "{\"x\": \"\\q\"}",
            "{\"x\": [1, 2,]}",
            "{\"x\": {\"a\": 1,}}",
            "{\"x\": 01}",
            "{\"x\": 1.}",
            "{\"x\": tru}",
        ];
        for json in cases {
            same_acceptance(json);
        }
        let deep = |n: usize| format!("{{\"x\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        for n in [126, 127, 128, 200] {
            same_acceptance(&deep(n));
        }
        let deep_obj = |n: usize| format!("{}1{}", "{\"x\": ".repeat(n), "}".repeat(n));
        for n in [127, 128, 129, 200] {
            same_acceptance(&deep_obj(n));
        }
        // Invalid UTF-8 in a skipped string, and in a skipped key.
        for bytes in [
            &b"{\"x\": \"\xff\"}"[..],
            b"{\"\xff\": 1}",
            b"{\"s\": \"\xc3\"}",
        ] {
            assert_eq!(
                serde_json::from_slice::<Obj<Probe<'_>>>(bytes).is_ok(),
                serde_json::from_slice::<Value>(bytes).is_ok()
            );
            assert!(serde_json::from_slice::<Obj<Probe<'_>>>(bytes).is_err());
        }
    }

    #[test]
    fn the_raw_value_form_is_read_as_value_reads_it() {
        let token = RAW_VALUE_TOKEN;
        let text = format!(r#"{{"{token}": "{{\"s\": \"inner\"}}"}}"#);
        let p = probe(&text).unwrap().0;
        assert_eq!(p.s.as_str(), "inner");
        for json in [
            format!(r#"{{"{token}": 5}}"#),
            format!(r#"{{"{token}": "not json"}}"#),
            format!(r#"{{"{token}": "{{}}", "s": "x"}}"#),
            format!(r#"{{"s": "x", "{token}": 5}}"#),
            format!(r#"{{"{token}": "[1]"}}"#),
            format!(r#"{{"x": {{"{token}": 5}}}}"#),
            format!(r#"{{"x": {{"{token}": "{{}}"}}}}"#),
            format!(r#"{{"obj": {{"a": 1, "{token}": "{{\"s\": 1}}"}}}}"#),
            // Inside the re-read text the token is first again: read again, and `1` fails.
            format!(r#"{{"obj": {{"{token}": "{{\"{token}\": 1, \"s\": \"x\"}}"}}}}"#),
        ] {
            same_acceptance(&json);
        }
        // Second in the text, it is an ordinary key, even where a map would sort it first.
        let text = format!(r#"{{"s": "x", "{token}": "y"}}"#);
        let p = probe(&text).unwrap().0;
        assert_eq!(p.s.as_str(), "x");
        let text = format!(r#"{{"{token}": "{{\"s\": \"x\", \"{token}\": 5}}"}}"#);
        let p = probe(&text).unwrap().0;
        assert_eq!(p.s.as_str(), "x");
    }
}
