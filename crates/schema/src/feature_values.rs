//! [`FeatureValues`]: the name-to-value map of a [`FeatureVector`](crate::FeatureVector), stored
//! as one shared, sorted list of names plus a plain `Vec<f64>`.
//!
//! Every vector of a feature spec has the same names, so each vector holding its own `String`
//! keys (as a `BTreeMap<String, f64>` did) cost about 25 allocations and a tree build per event,
//! on the windower's side and again on the scorer's when it decodes the vector. Here the names are
//! an [`Arc<FeatureNames>`] shared by every vector built from one windower, and decoding reuses
//! the names of the previous vector on the same thread when the keys are the same, so a decoded
//! vector costs one allocation. The wire form is unchanged: an Avro `map<double>` with the keys
//! in sorted order, exactly what the `BTreeMap` wrote.

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Feature names, sorted and unique.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureNames(Box<[String]>);

impl FeatureNames {
    /// The names, if they are sorted and unique.
    pub fn from_sorted(names: Vec<String>) -> Option<Self> {
        names
            .windows(2)
            .all(|w| w[0] < w[1])
            .then(|| FeatureNames(names.into_boxed_slice()))
    }

    /// The names, sorted.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no names.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Position of `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }
}

/// Feature name to value, iterated in name order (like the `BTreeMap<String, f64>` it replaces).
#[derive(Clone, Default)]
pub struct FeatureValues {
    names: Arc<FeatureNames>,
    /// `values[i]` is the value of `names[i]`.
    values: Vec<f64>,
}

impl FeatureValues {
    /// Values for shared `names`, `values[i]` belonging to the i-th name; `None` if the lengths
    /// differ.
    pub fn from_parts(names: Arc<FeatureNames>, values: Vec<f64>) -> Option<Self> {
        (names.len() == values.len()).then_some(FeatureValues { names, values })
    }

    /// The names, shared with every vector built or decoded with the same ones.
    pub fn names(&self) -> &Arc<FeatureNames> {
        &self.names
    }

    /// The values, in name order.
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no features.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&f64> {
        self.names.position(name).map(|i| &self.values[i])
    }

    /// Names and values, in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &f64)> + '_ {
        self.names
            .as_slice()
            .iter()
            .map(String::as_str)
            .zip(&self.values)
    }

    /// The names, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.names.as_slice().iter().map(String::as_str)
    }
}

impl From<BTreeMap<String, f64>> for FeatureValues {
    fn from(map: BTreeMap<String, f64>) -> Self {
        let (names, values): (Vec<String>, Vec<f64>) = map.into_iter().unzip();
        FeatureValues {
            names: Arc::new(FeatureNames(names.into_boxed_slice())),
            values,
        }
    }
}

impl<const N: usize> From<[(String, f64); N]> for FeatureValues {
    fn from(pairs: [(String, f64); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// Later pairs win over earlier ones with the same name, as in a map.
impl FromIterator<(String, f64)> for FeatureValues {
    fn from_iter<I: IntoIterator<Item = (String, f64)>>(pairs: I) -> Self {
        pairs.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl std::ops::Index<&str> for FeatureValues {
    type Output = f64;

    fn index(&self, name: &str) -> &f64 {
        self.get(name)
            .unwrap_or_else(|| panic!("no feature named {name:?}"))
    }
}

/// Equal when they hold the same names with equal values (NaN is never equal, as with `f64`).
impl PartialEq for FeatureValues {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(&self.names, &other.names) || self.names == other.names)
            && self.values == other.values
    }
}

impl fmt::Debug for FeatureValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for FeatureValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

thread_local! {
    /// Names of the last vector decoded on this thread: the next one almost always has the same.
    static LAST_NAMES: RefCell<Arc<FeatureNames>> = RefCell::default();
}

impl<'de> Deserialize<'de> for FeatureValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ValuesVisitor)
    }
}

struct ValuesVisitor;

impl<'de> Visitor<'de> for ValuesVisitor {
    type Value = FeatureValues;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of feature names to numbers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureValues, A::Error> {
        let last = LAST_NAMES.with(|n| n.borrow().clone());
        // The input's own count when it gives one; the previous vector's size is only a guess, so
        // one huge hostile vector cannot make every later decode reserve as much.
        let guess = map.size_hint().unwrap_or(last.len()).min(1024);
        let mut values = Vec::with_capacity(guess);
        // Set once a key differs from `last`'s at its position: from then on, a map as before.
        let mut other: Option<BTreeMap<String, f64>> = None;
        loop {
            let expected = match other {
                None => last.as_slice().get(values.len()).map(String::as_str),
                Some(_) => None,
            };
            let Some(key) = map.next_key_seed(KeySeed { expected })? else {
                break;
            };
            let value: f64 = map.next_value()?;
            match (key, &mut other) {
                (Key::Expected, None) => values.push(value),
                (Key::Other(name), Some(m)) => {
                    m.insert(name, value);
                }
                (Key::Other(name), None) => {
                    let mut m: BTreeMap<String, f64> = last
                        .as_slice()
                        .iter()
                        .cloned()
                        .zip(values.drain(..))
                        .collect();
                    m.insert(name, value);
                    other = Some(m);
                }
                (Key::Expected, Some(_)) => unreachable!("no key is expected once they differ"),
            }
        }
        let decoded = match other {
            None if values.len() == last.len() => FeatureValues {
                names: last,
                values,
            },
            None => last.as_slice().iter().cloned().zip(values).collect(),
            Some(m) => m.into(),
        };
        if !Arc::ptr_eq(&decoded.names, &LAST_NAMES.with(|n| n.borrow().clone())) {
            LAST_NAMES.with(|n| *n.borrow_mut() = decoded.names.clone());
        }
        Ok(decoded)
    }
}

/// A map key: the one expected at this position (not copied), or another, owned.
enum Key {
    Expected,
    Other(String),
}

struct KeySeed<'a> {
    expected: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feature name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match self.expected {
            Some(e) if e == v => Key::Expected,
            _ => Key::Other(v.to_owned()),
        })
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key, E> {
        match std::str::from_utf8(v) {
            Ok(v) => self.visit_str(v),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(v), &self)),
        }
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Key, E> {
        Ok(match self.expected {
            Some(e) if e == v => Key::Expected,
            _ => Key::Other(v),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn json_round_trip(v: &FeatureValues) -> FeatureValues {
        serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
    }

    #[test]
    fn behaves_like_the_sorted_map_it_replaces() {
        let v: FeatureValues = [("b".to_string(), 2.0), ("a".to_string(), 1.0)].into();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(v.get("b"), Some(&2.0));
        assert_eq!(v.get("c"), None);
        assert_eq!(v["a"], 1.0);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string(&map(&[("a", 1.0), ("b", 2.0)])).unwrap()
        );
        let later_wins: FeatureValues = [("a".to_string(), 1.0), ("a".to_string(), 3.0)].into();
        assert_eq!(later_wins, map(&[("a", 3.0)]).into());
    }

    #[test]
    fn decoding_shares_the_names_of_the_previous_vector() {
        let first: FeatureValues = map(&[("x", 1.0), ("y", 2.0)]).into();
        let a = json_round_trip(&first);
        let b = json_round_trip(&first);
        assert_eq!(a, first);
        assert!(Arc::ptr_eq(a.names(), b.names()));
    }

    #[test]
    fn keys_that_differ_from_the_previous_vector_decode_as_a_map() {
        json_round_trip(&map(&[("a", 1.0), ("b", 2.0), ("c", 3.0)]).into());
        for other in [
            map(&[("a", 1.0), ("c", 3.0)]),
            map(&[("a", 1.0), ("b", 2.0)]),
            map(&[("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]),
            map(&[("b", 5.0)]),
            map(&[]),
        ] {
            let v: FeatureValues = other.clone().into();
            assert_eq!(json_round_trip(&v), v, "{other:?}");
        }
        // Unsorted and repeated keys from a foreign writer: sorted, the later value wins.
        let raw = r#"{"b": 1.0, "a": 2.0, "b": 3.0}"#;
        let v: FeatureValues = serde_json::from_str(raw).unwrap();
        assert_eq!(v, map(&[("a", 2.0), ("b", 3.0)]).into());
    }

    #[test]
    fn from_parts_needs_one_value_per_name() {
        let names = Arc::new(FeatureNames::from_sorted(vec!["a".into(), "b".into()]).unwrap());
        assert!(FeatureValues::from_parts(names.clone(), vec![1.0]).is_none());
        let v = FeatureValues::from_parts(names, vec![1.0, 2.0]).unwrap();
        assert_eq!(v["b"], 2.0);
        assert!(FeatureNames::from_sorted(vec!["b".into(), "a".into()]).is_none());
        assert!(FeatureNames::from_sorted(vec!["a".into(), "a".into()]).is_none());
    }
}
