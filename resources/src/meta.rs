//! `metadata` and the name rules of Kubernetes (k8s.io/apimachinery validation), plus label
//! selectors with `matchLabels` and `matchExpressions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Errors, Obj, join};

/// `metadata` of every object. `uid`, `generation` and `creationTimestamp` are set by meshd.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Bumped by meshd each time the spec changes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// RFC 3339, UTC, set when the object is first created.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_timestamp: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What the name of a kind must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 label: namespaces.
    Dns1123Label,
    /// RFC 1035 label (starts with a letter): services.
    Dns1035Label,
    /// RFC 1123 subdomain: network policies, IP pools.
    Dns1123Subdomain,
}

pub fn dns1123_label(s: &str) -> Result<(), &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc'), at most 63 characters",
        )
    }
}

pub(crate) fn dns1035_label(s: &str) -> Result<(), &'static str> {
    if dns1123_label(s).is_ok() && s.starts_with(|c: char| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123'), at most 63 characters",
        )
    }
}

pub fn dns1123_subdomain(s: &str) -> Result<(), &'static str> {
    if !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_ok()) {
        Ok(())
    } else {
        Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com'), at most 253 characters",
        )
    }
}

fn check_name(rule: NameRule, s: &str) -> Result<(), &'static str> {
    match rule {
        NameRule::Dns1123Label => dns1123_label(s),
        NameRule::Dns1035Label => dns1035_label(s),
        NameRule::Dns1123Subdomain => dns1123_subdomain(s),
    }
}

/// Checks a map of labels (keys and values), each error at `path[key]`.
pub(crate) fn check_labels(map: &BTreeMap<String, String>, path: &str, errs: &mut Errors) {
    for (k, v) in map {
        if let Err(e) = common::Labels::from_pairs([(k.as_str(), v.as_str())]) {
            errs.invalid(&format!("{path}[{k}]"), &Value::String(v.clone()), e);
        }
    }
}

/// Reads `metadata`. `namespaced`: the kind lives in a namespace (default `default`).
pub(crate) fn read_meta(
    root: &mut Obj<'_>,
    rule: NameRule,
    namespaced: bool,
    errs: &mut Errors,
) -> ObjectMeta {
    let mut meta = ObjectMeta::default();
    let Some(mut m) = root.obj("metadata", errs) else {
        errs.required("metadata.name");
        return meta;
    };
    match m.string("name", errs) {
        Some(n) => {
            if let Err(why) = check_name(rule, &n) {
                errs.invalid("metadata.name", &Value::String(n.clone()), why);
            }
            meta.name = n;
        }
        None if m.has("name") => {}
        None if m.has("generateName") => {
            errs.forbidden(
                "metadata.generateName",
                "generated names are not supported: set metadata.name",
            );
        }
        None => errs.required("metadata.name"),
    }
    let ns = m.string("namespace", errs);
    if namespaced {
        let ns = ns.unwrap_or_else(|| "default".to_string());
        if let Err(why) = dns1123_label(&ns) {
            errs.invalid("metadata.namespace", &Value::String(ns.clone()), why);
        }
        meta.namespace = Some(ns);
    } else if let Some(ns) = ns
        && !ns.is_empty()
    {
        errs.forbidden(
            "metadata.namespace",
            format!("not allowed on a cluster-scoped resource (got {ns:?}); remove it"),
        );
    }
    meta.labels = m.string_map("labels", errs);
    check_labels(&meta.labels, "metadata.labels", errs);
    meta.annotations = m.string_map("annotations", errs);
    for (k, v) in &meta.annotations {
        // Annotation keys follow label key rules; values are free text (bounded).
        if let Err(e) = common::Labels::from_pairs([(k.as_str(), "")]) {
            errs.invalid(
                &format!("metadata.annotations[{k}]"),
                &Value::String(k.clone()),
                e,
            );
        }
        if v.len() > 64 * 1024 {
            errs.push(
                &format!("metadata.annotations[{k}]"),
                "Too long: must have at most 65536 bytes",
            );
        }
    }
    // Set by a server; accepted so a manifest saved from `get -o yaml` applies again.
    m.ignore(&[
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "finalizers",
        "ownerReferences",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ]);
    m.finish(errs);
    meta
}

/// `In`, `NotIn`, `Exists`, `DoesNotExist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector: every `matchLabels` pair and every requirement must hold; the empty
/// selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy the selector (Kubernetes semantics: `NotIn` and
    /// `DoesNotExist` hold when the key is absent).
    pub fn matches<'a>(&self, labels: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let got = labels(&r.key);
                match r.operator {
                    Operator::In => got.is_some_and(|g| r.values.iter().any(|v| v == g)),
                    Operator::NotIn => got.is_none_or(|g| !r.values.iter().any(|v| v == g)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }

    /// `app=web,tier in (a,b)`: as kubectl prints a selector.
    pub fn to_display(&self) -> String {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        if parts.is_empty() {
            "<all>".into()
        } else {
            parts.join(",")
        }
    }
}

/// Reads a label selector at `obj`.
pub(crate) fn read_selector(mut s: Obj<'_>, errs: &mut Errors) -> LabelSelector {
    let path = s.path.clone();
    let match_labels = s.string_map("matchLabels", errs);
    check_labels(&match_labels, &join(&path, "matchLabels"), errs);
    let mut match_expressions = Vec::new();
    for (p, v) in s.list("matchExpressions", errs).unwrap_or_default() {
        let Some(mut e) = Obj::new(v, &p, errs) else {
            continue;
        };
        let key = e.string("key", errs);
        if key.is_none() {
            errs.required(&join(&p, "key"));
        }
        if let Some(k) = &key
            && let Err(err) = common::Labels::from_pairs([(k.as_str(), "")])
        {
            errs.invalid(&join(&p, "key"), &Value::String(k.clone()), err);
        }
        let op = match e.get("operator") {
            Some(Value::String(o)) if o == "In" => Some(Operator::In),
            Some(Value::String(o)) if o == "NotIn" => Some(Operator::NotIn),
            Some(Value::String(o)) if o == "Exists" => Some(Operator::Exists),
            Some(Value::String(o)) if o == "DoesNotExist" => Some(Operator::DoesNotExist),
            Some(other) => {
                errs.unsupported(
                    &join(&p, "operator"),
                    other,
                    &["In", "NotIn", "Exists", "DoesNotExist"],
                );
                None
            }
            None => {
                errs.required(&join(&p, "operator"));
                None
            }
        };
        let values: Vec<String> = e
            .strings("values", errs)
            .unwrap_or_default()
            .into_iter()
            .map(|(vp, v)| {
                if let Some(k) = &key
                    && let Err(err) = common::Labels::from_pairs([(k.as_str(), v.as_str())])
                {
                    errs.invalid(&vp, &Value::String(v.clone()), err);
                }
                v
            })
            .collect();
        match op {
            Some(Operator::In | Operator::NotIn) if values.is_empty() => {
                errs.required(&join(&p, "values"))
            }
            Some(Operator::Exists | Operator::DoesNotExist) if !values.is_empty() => errs
                .forbidden(
                    &join(&p, "values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
            _ => {}
        }
        e.finish(errs);
        if let (Some(key), Some(operator)) = (key, op) {
            match_expressions.push(Requirement {
                key,
                operator,
                values,
            });
        }
    }
    s.finish(errs);
    LabelSelector {
        match_labels,
        match_expressions,
    }
}

/// Checks that the strings at `items` are unique, reporting the repeats.
pub(crate) fn unique<'a>(items: impl IntoIterator<Item = (String, &'a str)>, errs: &mut Errors) {
    let mut seen = std::collections::BTreeSet::new();
    for (p, s) in items {
        if !seen.insert(s) {
            errs.duplicate(&p, &Value::String(s.to_string()));
        }
    }
}
