//! A pod's named container port (Kubernetes' `containers[].ports[]`): what a Service's named
//! `targetPort` and a NetworkPolicy's named port resolve through. Pods are not applied to
//! ironmesh: the runtime hands their ports to the CNI plugin (`runtimeConfig.ports`), which
//! records them with the attachment; meshd publishes them in the endpoint record.

use serde::{Deserialize, Serialize};

/// At most this many ports per pod (a bound on what a record may carry).
pub const MAX_CONTAINER_PORTS: usize = 64;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum PortProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

/// `{"name": "http", "containerPort": 8080, "protocol": "TCP"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    pub name: String,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// IANA_SVC_NAME (RFC 6335 §5.1), as Kubernetes checks a port name.
pub fn iana_svc_name(s: &str) -> Result<(), &'static str> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(
            "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter, and not start or end with '-' or contain '--'",
        )
    }
}

/// Checks a pod's ports: at most [`MAX_CONTAINER_PORTS`], each name an IANA_SVC_NAME used
/// once, each port non-zero. The error names the entry (`[1].name`).
pub fn check_container_ports(ports: &[ContainerPort]) -> Result<(), String> {
    if ports.len() > MAX_CONTAINER_PORTS {
        return Err(format!(
            "{} ports; at most {MAX_CONTAINER_PORTS} per pod",
            ports.len()
        ));
    }
    for (i, p) in ports.iter().enumerate() {
        iana_svc_name(&p.name).map_err(|e| format!("[{i}].name: {:?} {e}", p.name))?;
        if p.container_port == 0 {
            return Err(format!("[{i}].containerPort: must be 1-65535"));
        }
        if ports[..i].iter().any(|o| o.name == p.name) {
            return Err(format!(
                "[{i}].name: {:?} is used twice; port names are unique in a pod",
                p.name
            ));
        }
    }
    Ok(())
}

/// The port named `name` with `protocol`, if the pod has it.
pub fn find_port(ports: &[ContainerPort], name: &str, protocol: PortProtocol) -> Option<u16> {
    ports
        .iter()
        .find(|p| p.name == name && p.protocol == protocol)
        .map(|p| p.container_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, n: u16) -> ContainerPort {
        ContainerPort {
            name: name.into(),
            container_port: n,
            protocol: PortProtocol::Tcp,
        }
    }

    #[test]
    fn ports_are_checked_and_found_by_name_and_protocol() {
        let json = r#"[{"name":"http","containerPort":8080},{"name":"dns","containerPort":53,"protocol":"UDP"}]"#;
        let ps: Vec<ContainerPort> = serde_json::from_str(json).unwrap();
        assert_eq!(check_container_ports(&ps), Ok(()));
        assert_eq!(find_port(&ps, "http", PortProtocol::Tcp), Some(8080));
        assert_eq!(find_port(&ps, "dns", PortProtocol::Udp), Some(53));
        assert_eq!(find_port(&ps, "dns", PortProtocol::Tcp), None);
        assert!(
            check_container_ports(&[port("http", 1), port("http", 2)])
                .unwrap_err()
                .starts_with("[1].name: \"http\" is used twice")
        );
        assert!(
            check_container_ports(&[port("Http", 1)])
                .unwrap_err()
                .starts_with("[0].name")
        );
        assert!(
            check_container_ports(&[port("a", 0)])
                .unwrap_err()
                .starts_with("[0].containerPort")
        );
        let many: Vec<ContainerPort> = (1..=65).map(|i| port(&format!("p{i}"), i)).collect();
        assert!(check_container_ports(&many).is_err());
        assert!(
            serde_json::from_str::<ContainerPort>(r#"{"name":"a","containerPort":1,"hostPort":2}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<ContainerPort>(r#"{"name":"a","containerPort":70000}"#).is_err()
        );
    }
}
