//! A strict walker over a manifest's JSON value: every field read is marked, every field left
//! over is an "unknown field", and every problem is collected with its path as kubectl prints
//! it (`spec.ports[1].targetPort`), so one apply reports all errors at once.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One problem with one field, phrased as the Kubernetes API server phrases it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.ports[1].targetPort`, `metadata.name`, `spec.selector[app]`.
    pub path: String,
    /// `Required value`, `Invalid value: "x": must be ...`, `unknown field`...
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}", self.path, self.detail)
        }
    }
}

/// A value quoted in an error, bounded so a huge hostile value cannot flood a log or a reply.
pub(crate) fn quote(v: &Value) -> String {
    const MAX: usize = 64;
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// Collects errors; the validators push into it and go on.
#[derive(Debug, Default)]
pub(crate) struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn push(&mut self, path: &str, detail: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_string(),
            detail: detail.into(),
        });
    }

    pub fn required(&mut self, path: &str) {
        self.push(path, "Required value");
    }

    pub fn invalid(&mut self, path: &str, v: &Value, why: impl fmt::Display) {
        self.push(path, format!("Invalid value: {}: {why}", quote(v)));
    }

    pub fn unsupported(&mut self, path: &str, v: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                quote(v),
                list.join(", ")
            ),
        );
    }

    pub fn forbidden(&mut self, path: &str, why: impl Into<String>) {
        self.push(path, format!("Forbidden: {}", why.into()));
    }

    pub fn duplicate(&mut self, path: &str, v: &Value) {
        self.push(path, format!("Duplicate value: {}", quote(v)));
    }

    fn wrong_type(&mut self, path: &str, v: &Value, want: &str) {
        // YAML reads y, n, yes, no, on, off, true, false and numbers unquoted as non-strings.
        let hint = if want.contains("string") && (v.is_boolean() || v.is_number()) {
            " (quote it: YAML reads it unquoted as a boolean or a number)"
        } else {
            ""
        };
        self.push(
            path,
            format!(
                "Invalid value: {}: expected {want}, got {}{hint}",
                quote(v),
                type_name(v)
            ),
        );
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// An object being read: fields taken are marked; [`Obj::finish`] reports the others.
pub(crate) struct Obj<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    taken: Vec<&'a str>,
}

impl<'a> Obj<'a> {
    /// `v` must be an object (null counts as an empty one, as the API server treats it).
    pub fn new(v: &'a Value, path: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match v {
            Value::Object(map) => Some(Obj {
                path: path.to_string(),
                map,
                taken: Vec::new(),
            }),
            Value::Null => Some(Obj {
                path: path.to_string(),
                map: EMPTY.get_or_init(Map::new),
                taken: Vec::new(),
            }),
            other => {
                errs.wrong_type(path, other, "an object");
                None
            }
        }
    }

    /// The field's value, `None` when absent or null (absent and null are the same to the API).
    pub fn get(&mut self, name: &'a str) -> Option<&'a Value> {
        self.taken.push(name);
        match self.map.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// Whether the field is present at all (even null or empty).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Marks fields that are accepted and deliberately not used (set by a server, e.g.
    /// `metadata.uid` in a manifest saved from `get -o yaml`).
    pub fn ignore(&mut self, names: &[&'a str]) {
        self.taken.extend_from_slice(names);
    }

    pub fn field_path(&self, name: &str) -> String {
        join(&self.path, name)
    }

    pub fn string(&mut self, name: &'a str, errs: &mut Errors) -> Option<String> {
        let path = self.field_path(name);
        self.get(name).and_then(|v| string(v, &path, errs))
    }

    pub fn bool(&mut self, name: &'a str, errs: &mut Errors) -> Option<bool> {
        let path = self.field_path(name);
        match self.get(name)? {
            Value::Bool(b) => Some(*b),
            other => {
                errs.wrong_type(&path, other, "a boolean");
                None
            }
        }
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, name: &'a str, lo: i64, hi: i64, errs: &mut Errors) -> Option<i64> {
        let path = self.field_path(name);
        self.get(name).and_then(|v| int(v, &path, lo, hi, errs))
    }

    pub fn obj(&mut self, name: &'a str, errs: &mut Errors) -> Option<Obj<'a>> {
        let path = self.field_path(name);
        self.get(name).and_then(|v| Obj::new(v, &path, errs))
    }

    /// A list field: each element with its path. `None` when absent.
    pub fn list(&mut self, name: &'a str, errs: &mut Errors) -> Option<Vec<(String, &'a Value)>> {
        let path = self.field_path(name);
        if !self.has(name) {
            self.taken.push(name);
            return None;
        }
        match self.get(name) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (index(&path, i), v))
                    .collect(),
            ),
            Some(other) => {
                errs.wrong_type(&path, other, "a list");
                None
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, name: &'a str, errs: &mut Errors) -> Option<Vec<(String, String)>> {
        let items = self.list(name, errs)?;
        Some(
            items
                .into_iter()
                .filter_map(|(p, v)| string(v, &p, errs).map(|s| (p, s)))
                .collect(),
        )
    }

    /// A map of strings to strings (labels, annotations, selectors).
    pub fn string_map(&mut self, name: &'a str, errs: &mut Errors) -> BTreeMap<String, String> {
        let path = self.field_path(name);
        let mut out = BTreeMap::new();
        match self.get(name) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => errs.wrong_type(&format!("{path}[{k}]"), other, "a string"),
                    }
                }
            }
            Some(other) => errs.wrong_type(&path, other, "an object of strings"),
        }
        out
    }

    /// Reports every field not taken as unknown (kubectl's strict field validation).
    pub fn finish(self, errs: &mut Errors) {
        for k in self.map.keys() {
            if !self.taken.contains(&k.as_str()) {
                errs.push(
                    &join(&self.path, k),
                    "unknown field; check its spelling and the resource's apiVersion",
                );
            }
        }
    }
}

pub(crate) fn string(v: &Value, path: &str, errs: &mut Errors) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            errs.wrong_type(path, other, "a string");
            None
        }
    }
}

pub(crate) fn int(v: &Value, path: &str, lo: i64, hi: i64, errs: &mut Errors) -> Option<i64> {
    match v.as_i64() {
        Some(n) if (lo..=hi).contains(&n) => Some(n),
        Some(_) => {
            errs.invalid(path, v, format!("must be between {lo} and {hi}, inclusive"));
            None
        }
        None => {
            errs.wrong_type(path, v, "an integer");
            None
        }
    }
}
