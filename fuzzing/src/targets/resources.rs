//! resources: manifests as `ironctl apply` reads them, and objects as stored in etcd (where a
//! remote cluster's mirror may hold them too).

use resources::Stored;
use serde_json::json;

use crate::Outcome;

/// `manifest`: any text as a manifest (`parse_manifests`), every document checked
/// (`decode`). What is accepted is stored as its document: that document is accepted again as
/// the same object, and its stored form (`Stored::encode`) reads back the same.
pub fn manifest(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let Ok(text) = std::str::from_utf8(data) else {
        return o;
    };
    let r = resources::parse_manifests(text);
    o.step("parse", &r);
    let Ok(docs) = r else {
        return o;
    };
    for doc in docs.iter().take(8) {
        let r = resources::decode(doc);
        o.step("decode", &r);
        if let Ok(obj) = r {
            o.note(obj.kind());
            let again = resources::decode(&obj.document).unwrap_or_else(|e| {
                panic!("the stored document of an accepted object is refused: {e}")
            });
            assert_eq!(again, obj, "the stored document decodes to another object");
            let stored = Stored {
                object: obj,
                status: serde_json::Value::Null,
            };
            let back = Stored::decode(&stored.encode())
                .unwrap_or_else(|e| panic!("a stored object does not read back: {e}"));
            assert_eq!(back, stored, "a stored object reads back different");
        }
    }
    o
}

/// `stored_object`: any bytes as an etcd value of `objects/...` (`Stored::decode`); what
/// decodes encodes to bytes that decode to the same.
pub fn stored(data: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let r = Stored::decode(data);
    o.step("stored", &r);
    if let Ok(s) = &r {
        o.note(s.object.kind());
        let back = Stored::decode(&s.encode())
            .unwrap_or_else(|e| panic!("a re-encoded stored object is refused: {e}"));
        assert_eq!(&back, s, "a re-encoded stored object reads back different");
    }
    o
}

/// A NetworkPolicy and a Namespace (the Kubernetes documentation's NetworkPolicy example),
/// besides the lab's manifests.
const MORE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: web
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
      endPort: 6000
"#;

fn manifests() -> Vec<&'static str> {
    vec![
        include_str!("../../../configs/examples/manifests/mesh-red.yaml"),
        include_str!("../../../configs/examples/manifests/mesh-blue.yaml"),
        include_str!("../../../configs/examples/manifests/bgp-advertisement.yaml"),
        MORE,
    ]
}

pub fn manifest_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = manifests().iter().map(|m| m.as_bytes().to_vec()).collect();
    // Each document alone, and all of them as a JSON List (kubectl get -o json).
    let docs: Vec<serde_json::Value> = manifests()
        .iter()
        .flat_map(|m| resources::parse_manifests(m).expect("example manifests parse"))
        .collect();
    for d in &docs {
        out.push(resources::to_yaml(d).into_bytes());
    }
    out.push(
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": docs}))
            .expect("serializes"),
    );
    out
}

/// The example objects as meshd stores them (uid, generation, status).
pub fn stored_objects() -> Vec<Stored> {
    manifests()
        .iter()
        .flat_map(|m| resources::parse_manifests(m).expect("example manifests parse"))
        .enumerate()
        .map(|(i, mut doc)| {
            resources::set_metadata(&mut doc, "uid", json!(format!("00000000-0000-4000-8000-{i:012}")));
            resources::set_metadata(&mut doc, "generation", json!(1));
            resources::set_metadata(&mut doc, "creationTimestamp", json!("2026-12-07T12:00:00Z"));
            let object = resources::decode(&doc).expect("example manifests decode");
            Stored {
                object,
                status: json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Applied"}]}),
            }
        })
        .collect()
}

pub fn stored_seeds() -> Vec<Vec<u8>> {
    stored_objects().iter().map(Stored::encode).collect()
}

pub const MANIFEST_TOKENS: &[&[u8]] = &[
    b"---\n",
    b"apiVersion: v1\n",
    b"kind: Service\n",
    b"kind: List\n",
    b"metadata:\n  name: x\n",
    b"&a ",
    b"*a",
    b"<<: ",
    b"!!binary ",
    b"!!int ",
    b"? ",
    b"- ",
    b"  ",
    b"|\n",
    b"'",
    b"~",
    b"0x",
    b"0o",
    b".inf",
    b".nan",
    b"\"namespace\":",
    b"\"status\":",
    b"\"spec\":",
    b"matchExpressions",
    b"operator: In",
    b"targetPort",
    b"endPort",
    b"clusterIP",
    b"ipFamilies",
];
