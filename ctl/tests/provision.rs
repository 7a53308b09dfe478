//! `ironctl mesh provision` refuses bad inputs before it contacts etcd: password files others
//! can read (naming the flag and `chmod 600`, never the password), malformed `--reader`s.
//! The command against real etcd: interop-tests' `etcd_mesh_rbac` and the mesh lab.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("pw-of-{name}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn provision(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ironctl"))
        .args(["mesh", "provision", "--cluster", "red"])
        // Nothing listens there: every case must fail before connecting.
        .args(["--endpoints", "http://127.0.0.1:9", "--timeout", "1"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn provision_refuses_open_password_files_and_bad_readers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = file(d, "root", 0o600);
    let own = file(d, "red", 0o600);
    let open = file(d, "open", 0o644);
    let s = |p: &Path| p.display().to_string();

    let (ok, err) = provision(&[
        "--root-password-file",
        &s(&open),
        "--password-file",
        &s(&own),
    ]);
    assert!(!ok);
    assert!(err.contains("--root-password-file: "), "{err}");
    assert!(
        err.contains(&format!("run `chmod 600 {}`", s(&open))),
        "{err}"
    );
    assert!(!err.contains("pw-of-open"), "{err}");

    let reader = format!("blue={}", s(&open));
    let (ok, err) = provision(&[
        "--root-password-file",
        &s(&root),
        "--password-file",
        &s(&own),
        "--reader",
        &reader,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--reader blue: ") && err.contains("chmod 600"),
        "{err}"
    );

    for (bad, says) in [
        ("blue", "write REMOTE=PASSWORD_FILE"),
        (
            &*format!("red={}", s(&own)),
            "the cluster being provisioned",
        ),
    ] {
        let (ok, err) = provision(&[
            "--root-password-file",
            &s(&root),
            "--password-file",
            &s(&own),
            "--reader",
            bad,
        ]);
        assert!(!ok && err.contains(says), "{bad}: {err}");
    }

    // Good files: it gets as far as etcd, and says where it looked.
    let (ok, err) = provision(&[
        "--root-password-file",
        &s(&root),
        "--password-file",
        &s(&own),
    ]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert!(!err.contains("pw-of-"), "{err}");
}
