//! Label sets with Kubernetes key/value rules and one canonical string form,
//! `k1=v1,k2=v2` sorted by key, used to find an identity by its labels.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a label or label string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("label key {key:?}: {reason}")]
    Key { key: String, reason: &'static str },
    #[error("label {key:?} value {value:?}: {reason}")]
    Value {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("label {0:?} appears twice; keep one")]
    Duplicate(String),
    #[error("label {0:?} has no '='; write key=value")]
    MissingEquals(String),
}

const NAME_RULE: &str = "use at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit";

/// Kubernetes "qualified name" part / label value charset check.
fn name_ok(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// DNS subdomain (RFC 1123), as the optional key prefix.
fn subdomain_ok(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

fn check_key(key: &str) -> Result<(), LabelError> {
    let err = |reason| {
        Err(LabelError::Key {
            key: key.into(),
            reason,
        })
    };
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !subdomain_ok(prefix) {
                return err(
                    "the prefix before '/' must be a DNS subdomain (lowercase a-z, 0-9, '-', '.'; at most 253 characters)",
                );
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return err("the name is empty; use e.g. app or example.com/app");
    }
    if !name_ok(name) {
        return err(NAME_RULE);
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), LabelError> {
    if value.is_empty() || name_ok(value) {
        Ok(())
    } else {
        Err(LabelError::Value {
            key: key.into(),
            value: value.into(),
            reason: "use an empty value or at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit",
        })
    }
}

/// A validated set of labels, kept sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from pairs; a repeated key is an error.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, LabelError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut labels = Self::new();
        for (k, v) in pairs {
            let k = k.into();
            if labels.0.contains_key(&k) {
                return Err(LabelError::Duplicate(k));
            }
            labels.insert(k, v)?;
        }
        Ok(labels)
    }

    /// Inserts or replaces a label, returning the old value.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Option<String>, LabelError> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        check_value(&key, &value)?;
        Ok(self.0.insert(key, value))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every label of `other` is in `self` with the same value.
    pub fn contains_all(&self, other: &Labels) -> bool {
        other.iter().all(|(k, v)| self.get(k) == Some(v))
    }
}

/// The canonical form: `k1=v1,k2=v2`, sorted by key; empty set is "".
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Parses `k1=v1,k2=v2` in any key order; "" is the empty set.
impl FromStr for Labels {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Ok(Self::new());
        }
        let pairs = s
            .split(',')
            .map(|item| {
                item.split_once('=')
                    .ok_or_else(|| LabelError::MissingEquals(item.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pairs(pairs)
    }
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = LabelError;
    fn try_from(m: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::from_pairs(m)
    }
}

impl From<Labels> for BTreeMap<String, String> {
    fn from(l: Labels) -> Self {
        l.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_form_is_sorted() {
        let l: Labels = "zone=b,app=web,example.com/tier=front".parse().unwrap();
        assert_eq!(l.to_string(), "app=web,example.com/tier=front,zone=b");
        assert_eq!(l.get("zone"), Some("b"));
        assert_eq!("".parse::<Labels>().unwrap(), Labels::new());
        assert_eq!("a=".parse::<Labels>().unwrap().get("a"), Some(""));
    }

    #[test]
    fn rejects_bad_labels() {
        assert_eq!(
            "a=1,a=2".parse::<Labels>(),
            Err(LabelError::Duplicate("a".into()))
        );
        assert_eq!(
            "app".parse::<Labels>(),
            Err(LabelError::MissingEquals("app".into()))
        );
        assert!(matches!(
            "-app=x".parse::<Labels>(),
            Err(LabelError::Key { .. })
        ));
        assert!(matches!(
            "Example.com/app=x".parse::<Labels>(),
            Err(LabelError::Key { .. })
        ));
        assert!(matches!(
            "/app=x".parse::<Labels>(),
            Err(LabelError::Key { .. })
        ));
        assert!(matches!(
            "a/=x".parse::<Labels>(),
            Err(LabelError::Key { .. })
        ));
        assert!(matches!(
            "app=a,b".parse::<Labels>(),
            Err(LabelError::MissingEquals(_))
        ));
        assert!(matches!(
            "app=x=y".parse::<Labels>(),
            Err(LabelError::Value { .. })
        ));
        let long = format!("app={}", "v".repeat(64));
        let err = long.parse::<Labels>().unwrap_err().to_string();
        assert!(err.starts_with("label \"app\" value"), "{err}");
    }

    #[test]
    fn subset_match() {
        let all: Labels = "app=web,tier=front".parse().unwrap();
        assert!(all.contains_all(&"app=web".parse().unwrap()));
        assert!(!all.contains_all(&"app=db".parse().unwrap()));
        assert!(all.contains_all(&Labels::new()));
    }

    #[test]
    fn serde_is_a_validated_map() {
        let l: Labels = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"a":"1","b":"2"}"#);
        assert!(serde_json::from_str::<Labels>(r#"{"a b":"1"}"#).is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,20}[a-zA-Z0-9])?"
    }

    proptest! {
        #[test]
        fn canonical_round_trip(
            pairs in proptest::collection::btree_map(
                (proptest::option::of("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}"), name()),
                proptest::option::of(name()),
                0..6,
            )
        ) {
            let labels = Labels::from_pairs(pairs.into_iter().map(|((p, n), v)| {
                (p.map_or(n.clone(), |p| format!("{p}/{n}")), v.unwrap_or_default())
            }))
            .unwrap();
            let s = labels.to_string();
            prop_assert_eq!(s.parse::<Labels>().unwrap(), labels.clone());
            prop_assert_eq!(s.parse::<Labels>().unwrap().to_string(), s);
        }
    }
}
