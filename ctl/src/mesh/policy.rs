//! `ironctl mesh policy apply|list|delete`: this cluster's network policies through meshd,
//! which validates and writes them (`ironmesh/v1/clusters/<c>/policies/<ns>/<name>`).

use std::path::{Path, PathBuf};

use api::mesh as pb;
use api::mesh::mesh_client::MeshClient;
use clap::Subcommand;
use serde::Serialize;
use tonic::transport::Channel;

use super::call;
use crate::table::{Align, Table};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Creates or replaces the policies in a file: JSON (one object or an array) or TOML
    /// (one policy as the top-level table, or several as `[[policy]]`).
    Apply {
        /// The file (`-` for JSON on stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// This cluster's policies.
    List,
    /// Deletes a policy.
    Delete {
        /// `<namespace>/<name>`.
        policy: String,
    },
}

/// A policy in `list`.
#[derive(Debug, Serialize)]
pub struct PolicyRow {
    pub namespace: String,
    pub name: String,
    pub policy: serde_json::Value,
}

/// The policies in `text`, as JSON objects (meshd checks them).
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<serde_json::Value>, String> {
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let v: serde_json::Value = if is_toml {
        let t: toml::Table =
            toml::from_str(text).map_err(|e| format!("{}: not TOML: {e}", path.display()))?;
        serde_json::to_value(t).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_json::from_str(text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?
    };
    match v {
        serde_json::Value::Array(list) => Ok(list),
        serde_json::Value::Object(mut o) if is_toml && o.contains_key("policy") => {
            match o.remove("policy") {
                Some(serde_json::Value::Array(list)) if o.is_empty() => Ok(list),
                _ => Err(format!(
                    "{}: use either [[policy]] tables only or one policy at the top level",
                    path.display()
                )),
            }
        }
        o @ serde_json::Value::Object(_) => Ok(vec![o]),
        _ => Err(format!(
            "{}: expected a policy object or a list of them",
            path.display()
        )),
    }
}

pub async fn run(
    c: &mut MeshClient<Channel>,
    cmd: PolicyCommand,
) -> Result<(String, String), String> {
    match cmd {
        PolicyCommand::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?
            };
            let mut keys = Vec::new();
            for p in parse_file(&file, &text)? {
                let r = call(c.apply_policy(pb::ApplyPolicyRequest {
                    json: p.to_string(),
                }))
                .await?;
                keys.push(r.key);
            }
            let text = keys.iter().map(|k| format!("applied {k}\n")).collect();
            Ok((text, super::json_of(&keys)?))
        }
        PolicyCommand::List => {
            let rows: Vec<PolicyRow> = call(c.list_policies(pb::ListPoliciesRequest {}))
                .await?
                .policies
                .into_iter()
                .map(|p| PolicyRow {
                    namespace: p.namespace,
                    name: p.name,
                    policy: serde_json::from_str(&p.json).unwrap_or(serde_json::Value::Null),
                })
                .collect();
            Ok((table(&rows), super::json_of(&rows)?))
        }
        PolicyCommand::Delete { policy } => {
            let (namespace, name) = policy
                .split_once('/')
                .ok_or_else(|| format!("{policy:?}: write the policy as <namespace>/<name>"))?;
            let r = call(c.delete_policy(pb::DeletePolicyRequest {
                namespace: namespace.into(),
                name: name.into(),
            }))
            .await?;
            if !r.deleted {
                return Err(format!("no policy {policy} in this cluster"));
            }
            Ok((format!("deleted {policy}\n"), super::json_of(&r.deleted)?))
        }
    }
}

fn count(v: &serde_json::Value, field: &str) -> usize {
    v.get(field).and_then(|x| x.as_array()).map_or(0, Vec::len)
}

pub fn table(rows: &[PolicyRow]) -> String {
    let mut t = Table::new(&[
        ("NAMESPACE", Align::Left),
        ("NAME", Align::Left),
        ("SELECTOR", Align::Left),
        ("INGRESS", Align::Right),
        ("EGRESS", Align::Right),
    ]);
    for r in rows {
        let sel = r.policy["endpoint_selector"]["match_labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "(all)".into());
        t.row(vec![
            r.namespace.clone(),
            r.name.clone(),
            sel,
            count(&r.policy, "ingress").to_string(),
            count(&r.policy, "egress").to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_toml_files() {
        let one = parse_file(Path::new("p.json"), r#"{"namespace":"a","name":"b"}"#).unwrap();
        assert_eq!(one.len(), 1);
        let two = parse_file(Path::new("p.json"), r#"[{"name":"b"},{"name":"c"}]"#).unwrap();
        assert_eq!(two.len(), 2);
        let toml = "namespace = \"shop\"\nname = \"p\"\n[endpoint_selector.match_labels]\napp = \"server\"\n\
                    [[ingress]]\nports = [{ protocol = \"tcp\", port = 80 }]\n";
        let t = parse_file(Path::new("p.toml"), toml).unwrap();
        assert_eq!(t[0]["endpoint_selector"]["match_labels"]["app"], "server");
        assert_eq!(t[0]["ingress"][0]["ports"][0]["port"], 80);
        let many = "[[policy]]\nnamespace = \"a\"\nname = \"x\"\n[[policy]]\nnamespace = \"a\"\nname = \"y\"\n";
        assert_eq!(parse_file(Path::new("p.toml"), many).unwrap().len(), 2);
        assert!(parse_file(Path::new("p.json"), "3").is_err());
        assert!(parse_file(Path::new("p.toml"), "other = 1\n[[policy]]\nname=\"x\"\n").is_err());
    }

    #[test]
    fn the_table_names_selector_and_rule_counts() {
        let rows = vec![PolicyRow {
            namespace: "shop".into(),
            name: "allow".into(),
            policy: serde_json::json!({"endpoint_selector":{"match_labels":{"app":"server"}},
                "ingress":[{}]}),
        }];
        let t = table(&rows);
        assert!(t.contains("app=server"), "{t}");
        assert!(t.contains("allow"), "{t}");
    }
}
