//! Every manifest in configs/examples/manifests/ loads and passes the checks meshd applies.

use std::path::Path;

#[test]
fn every_example_manifest_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/examples/manifests");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "json")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let docs = ironmesh_resources::parse_manifests(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!docs.is_empty(), "{}: no document", p.display());
        for d in &docs {
            ironmesh_resources::decode(d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "expected the lab's manifests, found {n} objects");
}
