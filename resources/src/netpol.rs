//! `networking.k8s.io/v1 NetworkPolicy` with all of its fields and the API server's
//! validation rules (networking/validation).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields::{Errors, Obj, join};
use crate::meta::{LabelSelector, read_selector};
use crate::service::{PortRef, Protocol, read_port_ref, read_protocol};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

/// One peer: pods (by pod and/or namespace selector) or an IP block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. `namespaces: None` means the policy's own
    /// namespace; `pods: None` means every pod of the selected namespaces.
    Pods {
        pods: Option<LabelSelector>,
        namespaces: Option<LabelSelector>,
    },
    IpBlock(IpBlock),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
    /// With a numeric `port`: the range `port..=end_port`.
    pub end_port: Option<u16>,
}

/// An ingress or egress rule. `peers: None` (absent or empty `from`/`to`) matches every
/// peer; `ports: None` (absent or empty) every port: the API treats absent and empty alike
/// inside a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rule {
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PolicyPort>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    pub pod_selector: LabelSelector,
    /// As written; see [`NetworkPolicySpec::effective_types`].
    pub policy_types: Vec<PolicyType>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl NetworkPolicySpec {
    /// Kubernetes: without `policyTypes`, Ingress always, Egress when egress rules exist. A
    /// selected direction without rules denies everything in it.
    pub fn effective_types(&self) -> Vec<PolicyType> {
        if !self.policy_types.is_empty() {
            return self.policy_types.clone();
        }
        let mut t = vec![PolicyType::Ingress];
        if !self.egress.is_empty() {
            t.push(PolicyType::Egress);
        }
        t
    }
}

fn read_cidr(v: &Value, path: &str, errs: &mut Errors) -> Option<IpNet> {
    match v.as_str().map(str::parse::<IpNet>) {
        Some(Ok(n)) => Some(n),
        _ => {
            errs.invalid(
                path,
                v,
                "must be a valid CIDR, e.g. 192.0.2.0/24 or 2001:db8::/64",
            );
            None
        }
    }
}

fn read_peer(v: &Value, path: &str, errs: &mut Errors) -> Option<Peer> {
    let mut o = Obj::new(v, path, errs)?;
    let pods = o.obj("podSelector", errs).map(|s| read_selector(s, errs));
    let namespaces = o
        .obj("namespaceSelector", errs)
        .map(|s| read_selector(s, errs));
    let block = match o.obj("ipBlock", errs) {
        Some(mut b) => {
            let bp = b.path.clone();
            let cidr = match b.get("cidr") {
                Some(c) => read_cidr(c, &join(&bp, "cidr"), errs),
                None => {
                    errs.required(&join(&bp, "cidr"));
                    None
                }
            };
            let mut except = Vec::new();
            for (p, e) in b.list("except", errs).unwrap_or_default() {
                let Some(ex) = read_cidr(e, &p, errs) else {
                    continue;
                };
                if let Some(c) = cidr
                    && !(c.contains(&ex.network()) && ex.prefix_len() > c.prefix_len())
                {
                    errs.invalid(&p, e, format!("must be a strict subset of `cidr` {c}"));
                }
                except.push(ex);
            }
            b.finish(errs);
            cidr.map(|cidr| IpBlock { cidr, except })
        }
        None => None,
    };
    let given = usize::from(pods.is_some() || namespaces.is_some()) + usize::from(o.has("ipBlock"));
    o.finish(errs);
    if given == 0 {
        errs.push(
            path,
            "Required value: must specify a peer (podSelector, namespaceSelector or ipBlock)",
        );
        return None;
    }
    if given > 1 {
        errs.forbidden(
            path,
            "may not specify more than 1 peer: ipBlock cannot be combined with podSelector or namespaceSelector",
        );
        return None;
    }
    match block {
        Some(b) => Some(Peer::IpBlock(b)),
        None if pods.is_some() || namespaces.is_some() => Some(Peer::Pods { pods, namespaces }),
        None => None,
    }
}

fn read_port(v: &Value, path: &str, errs: &mut Errors) -> Option<PolicyPort> {
    let mut o = Obj::new(v, path, errs)?;
    let protocol = read_protocol(&mut o, errs);
    let port_path = join(path, "port");
    let port = o
        .get("port")
        .and_then(|p| read_port_ref(p, &port_path, errs));
    let end_port = o.int("endPort", 1, 65535, errs).map(|n| n as u16);
    o.finish(errs);
    if let Some(end) = end_port {
        match &port {
            Some(PortRef::Number(start)) if end < *start => errs.invalid(
                &join(path, "endPort"),
                &Value::from(end),
                "must be greater than or equal to `port`",
            ),
            Some(PortRef::Number(_)) => {}
            Some(PortRef::Name(_)) => errs.invalid(
                &join(path, "endPort"),
                &Value::from(end),
                "may not be specified when `port` is non-numeric",
            ),
            None => errs.push(
                &port_path,
                "Required value: must be specified when `endPort` is specified",
            ),
        }
    }
    Some(PolicyPort {
        protocol,
        port,
        end_port,
    })
}

fn read_rules(
    o: &mut Obj<'_>,
    field: &'static str,
    peers: &'static str,
    errs: &mut Errors,
) -> Vec<Rule> {
    let mut out = Vec::new();
    for (p, v) in o.list(field, errs).unwrap_or_default() {
        let Some(mut r) = Obj::new(v, &p, errs) else {
            continue;
        };
        let peer_list: Vec<Peer> = r
            .list(peers, errs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(pp, pv)| read_peer(pv, &pp, errs))
            .collect();
        let ports: Vec<PolicyPort> = r
            .list("ports", errs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(pp, pv)| read_port(pv, &pp, errs))
            .collect();
        r.finish(errs);
        out.push(Rule {
            peers: (!peer_list.is_empty()).then_some(peer_list),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    out
}

pub(crate) fn read_network_policy(root: &mut Obj<'_>, errs: &mut Errors) -> NetworkPolicySpec {
    let mut spec = NetworkPolicySpec::default();
    let Some(mut s) = root.obj("spec", errs) else {
        errs.required("spec.podSelector");
        return spec;
    };
    match s.obj("podSelector", errs) {
        Some(sel) => spec.pod_selector = read_selector(sel, errs),
        // The API server requires the field; `{}` selects every pod of the namespace.
        None if !s.has("podSelector") => errs.required("spec.podSelector"),
        None => {}
    }
    for (p, t) in s.strings("policyTypes", errs).unwrap_or_default() {
        let ty = match t.as_str() {
            "Ingress" => PolicyType::Ingress,
            "Egress" => PolicyType::Egress,
            _ => {
                errs.unsupported(&p, &Value::String(t), &["Ingress", "Egress"]);
                continue;
            }
        };
        if spec.policy_types.contains(&ty) {
            errs.duplicate(&p, &Value::String(t));
        } else {
            spec.policy_types.push(ty);
        }
    }
    spec.ingress = read_rules(&mut s, "ingress", "from", errs);
    spec.egress = read_rules(&mut s, "egress", "to", errs);
    s.finish(errs);
    spec
}
