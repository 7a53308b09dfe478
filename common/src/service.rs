//! A service's identity: Kubernetes-style namespace and name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a service key was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceKeyError {
    #[error(
        "service {field} {value:?} is invalid; use 1 to 63 characters of a-z, 0-9 and '-', starting with {start} and ending with a letter or digit"
    )]
    Invalid {
        field: &'static str,
        value: String,
        start: &'static str,
    },
    #[error("service key {0:?} has no '/'; write namespace/name")]
    MissingSlash(String),
}

/// `namespace/name`: the namespace is a DNS label (RFC 1123), the name a
/// DNS-1035 label (starts with a letter), as in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawServiceKey", into = "RawServiceKey")]
pub struct ServiceKey {
    namespace: String,
    name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceKey {
    namespace: String,
    name: String,
}

fn label_ok(s: &str, first_letter: bool) -> bool {
    let first_ok =
        s.starts_with(|c: char| c.is_ascii_lowercase() || (!first_letter && c.is_ascii_digit()));
    s.len() <= 63
        && first_ok
        && !s.ends_with('-')
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> Result<Self, ServiceKeyError> {
        if !label_ok(namespace, false) {
            return Err(ServiceKeyError::Invalid {
                field: "namespace",
                value: namespace.into(),
                start: "a letter or digit",
            });
        }
        if !label_ok(name, true) {
            return Err(ServiceKeyError::Invalid {
                field: "name",
                value: name.into(),
                start: "a letter",
            });
        }
        Ok(Self {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceKey {
    type Err = ServiceKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| ServiceKeyError::MissingSlash(s.into()))?;
        Self::new(ns, name)
    }
}

impl TryFrom<RawServiceKey> for ServiceKey {
    type Error = ServiceKeyError;
    fn try_from(r: RawServiceKey) -> Result<Self, Self::Error> {
        Self::new(&r.namespace, &r.name)
    }
}

impl From<ServiceKey> for RawServiceKey {
    fn from(k: ServiceKey) -> Self {
        RawServiceKey {
            namespace: k.namespace,
            name: k.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let k: ServiceKey = "kube-system/dns".parse().unwrap();
        assert_eq!((k.namespace(), k.name()), ("kube-system", "dns"));
        assert_eq!(k.to_string(), "kube-system/dns");
        assert!("0ns/web".parse::<ServiceKey>().is_ok());
    }

    #[test]
    fn rejects() {
        assert_eq!(
            "web".parse::<ServiceKey>(),
            Err(ServiceKeyError::MissingSlash("web".into()))
        );
        assert_eq!(
            "default/1web"
                .parse::<ServiceKey>()
                .unwrap_err()
                .to_string(),
            "service name \"1web\" is invalid; use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and ending with a letter or digit"
        );
        assert!("a/b/c".parse::<ServiceKey>().is_err());
        assert!("/web".parse::<ServiceKey>().is_err());
        assert!("Default/web".parse::<ServiceKey>().is_err());
        assert!(ServiceKey::new("ns", &"a".repeat(64)).is_err());
    }

    #[test]
    fn serde() {
        let k = ServiceKey::new("default", "web").unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, r#"{"namespace":"default","name":"web"}"#);
        assert_eq!(serde_json::from_str::<ServiceKey>(&json).unwrap(), k);
        assert!(
            serde_json::from_str::<ServiceKey>(r#"{"namespace":"default","name":"-"}"#).is_err()
        );
    }
}
