//! Cluster and node names: DNS-label-like strings safe in etcd keys, file
//! names and interface descriptions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name was rejected; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} is empty; use 1 to {max} characters of a-z, 0-9 and '-'")]
    Empty { kind: &'static str, max: usize },
    #[error("{kind} {value:?} is {len} characters long; use at most {max}")]
    TooLong {
        kind: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} {value:?} has invalid character {ch:?}; use lowercase a-z, 0-9 and '-'{dots}")]
    BadChar {
        kind: &'static str,
        value: String,
        ch: char,
        dots: &'static str,
    },
    #[error("{kind} {value:?} must start and end with a-z or 0-9 (in every dot-separated part)")]
    BadEdge { kind: &'static str, value: String },
}

/// Checks one DNS label (RFC 1123): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn check_label(kind: &'static str, whole: &str, label: &str, dots: bool) -> Result<(), NameError> {
    let dots_hint = if dots { " ('.' separates parts)" } else { "" };
    if let Some(ch) = label
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(NameError::BadChar {
            kind,
            value: whole.into(),
            ch,
            dots: dots_hint,
        });
    }
    if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::BadEdge {
            kind,
            value: whole.into(),
        });
    }
    Ok(())
}

fn check_len(kind: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { kind, max });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            kind,
            value: value.into(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(&s)
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.0
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A cluster's name: one DNS label of at most 32 characters (as Cilium's
/// cluster names), unique across the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

impl ClusterName {
    pub const MAX_LEN: usize = 32;

    pub fn new(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "cluster name";
        check_len(KIND, s, Self::MAX_LEN)?;
        check_label(KIND, s, s, false)?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(ClusterName);

/// A node's name: a DNS subdomain (RFC 1123) of at most 253 characters,
/// as Kubernetes node names, e.g. `worker-1` or `worker-1.rack2.example`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub const MAX_LEN: usize = 253;

    pub fn new(s: &str) -> Result<Self, NameError> {
        const KIND: &str = "node name";
        check_len(KIND, s, Self::MAX_LEN)?;
        for label in s.split('.') {
            if label.len() > 63 {
                return Err(NameError::TooLong {
                    kind: "node name part",
                    value: label.into(),
                    len: label.len(),
                    max: 63,
                });
            }
            check_label(KIND, s, label, true)?;
        }
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(NodeName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names() {
        for ok in ["a", "blue", "eu-west-1", "0", &"a".repeat(32)] {
            assert!(ClusterName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            ClusterName::new("").unwrap_err().to_string(),
            "cluster name is empty; use 1 to 32 characters of a-z, 0-9 and '-'"
        );
        assert_eq!(
            ClusterName::new("Blue").unwrap_err().to_string(),
            "cluster name \"Blue\" has invalid character 'B'; use lowercase a-z, 0-9 and '-'"
        );
        assert!(matches!(
            ClusterName::new("a.b"),
            Err(NameError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            ClusterName::new("-a"),
            Err(NameError::BadEdge { .. })
        ));
        assert!(matches!(
            ClusterName::new("a-"),
            Err(NameError::BadEdge { .. })
        ));
        assert!(matches!(
            ClusterName::new(&"a".repeat(33)),
            Err(NameError::TooLong { len: 33, .. })
        ));
    }

    #[test]
    fn node_names() {
        for ok in ["worker-1", "worker-1.rack2.example", "n"] {
            assert_eq!(NodeName::new(ok).unwrap().as_str(), ok);
        }
        assert!(matches!(
            NodeName::new("a..b"),
            Err(NameError::BadEdge { .. })
        ));
        assert!(matches!(
            NodeName::new("a/b"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            NodeName::new(&"a".repeat(64)),
            Err(NameError::TooLong { max: 63, .. })
        ));
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(matches!(
            NodeName::new(&long),
            Err(NameError::TooLong { max: 253, .. })
        ));
    }

    #[test]
    fn serde_validates() {
        let n: NodeName = serde_json::from_str("\"w-1\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"w-1\"");
        let err = serde_json::from_str::<ClusterName>("\"UPPER\"").unwrap_err();
        assert!(err.to_string().contains("invalid character 'U'"), "{err}");
    }
}
