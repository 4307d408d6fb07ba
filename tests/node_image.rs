//! The image scripts/build-image.sh built from the Dockerfile, read from its
//! archive: it runs as the user the chart's securityContext expects, starts
//! meshgate with the paths the chart mounts, and carries no shell. Needs only
//! the archive (not root, not the cluster); skipped without it, unless
//! MESHGATE_REQUIRE_NODE=1.

mod node;

use std::path::Path;
use std::process::Command;

const TEST: &str = "node_image";

/// Names that would give `kubectl exec` a shell or a tool box.
const SHELLS: [&str; 6] = ["sh", "bash", "dash", "ash", "zsh", "busybox"];

fn tar(args: &[&str], archive: &Path) -> String {
    let out = node::run_bounded(Command::new("tar").args(args).arg(archive), "");
    assert!(out.status.success(), "tar {args:?}: {}", node::show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_is_laid_out_as_the_chart_runs_it() {
    let archive = node::image_archive();
    if !archive.is_file() {
        node::skip::<()>(TEST, &format!("no image archive {}", archive.display()));
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let unpacked = node::run_bounded(
        Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .arg("-xf")
            .arg(&archive),
        "",
    );
    assert!(unpacked.status.success(), "{}", node::show(&unpacked));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
    let manifest: serde_json::Value =
        serde_json::from_str(&read("manifest.json")).expect("manifest");
    let config: serde_json::Value =
        serde_json::from_str(&read(manifest[0]["Config"].as_str().expect("config")))
            .expect("config JSON");
    let config = &config["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/meshgate"])
    );
    assert_eq!(config["WorkingDir"], "/home/nonroot");
    chart_mounts_what_the_image_reads(config);

    let mut listing = String::new();
    let mut passwd = String::new();
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        let layer = dir.path().join(layer.as_str().expect("layer name"));
        listing.push_str(&tar(&["--numeric-owner", "-tvf"], &layer));
        if let Ok(text) = std::process::Command::new("tar")
            .args(["-xOf"])
            .arg(&layer)
            .arg("etc/passwd")
            .output()
        {
            passwd.push_str(&String::from_utf8_lossy(&text.stdout));
        }
    }
    // `tar -tv`: mode, uid/gid, size, date, time, path[ -> target].
    let entries: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let entry = |path: &str| {
        entries
            .iter()
            .find(|f| {
                f.get(5)
                    .is_some_and(|p| p.trim_start_matches("./").trim_end_matches('/') == path)
            })
            .unwrap_or_else(|| panic!("{path} not in the image:\n{listing}"))
    };
    assert_eq!(entry("usr/local/bin/meshgate")[0], "-rwxr-xr-x");
    assert_eq!(entry("home/nonroot")[1], "65532/65532");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let shells: Vec<&str> = entries
        .iter()
        .filter_map(|f| f.get(5).copied())
        .filter(|p| SHELLS.contains(&p.rsplit('/').next().unwrap_or(p)))
        .collect();
    assert!(shells.is_empty(), "a shell in the image: {shells:?}");
    let executables = entries
        .iter()
        .filter(|f| f[0].starts_with('-') && f[0].contains('x'))
        .filter_map(|f| f.get(5))
        .filter(|p| !p.contains(".so"))
        .collect::<Vec<_>>();
    assert_eq!(
        executables.len(),
        1,
        "executables besides meshgate and libraries: {executables:?}"
    );
}

/// The Dockerfile's default arguments read the certificate and the config
/// where the chart's Deployment mounts them, and the chart passes the same.
fn chart_mounts_what_the_image_reads(config: &serde_json::Value) {
    let deployment =
        std::fs::read_to_string(node::repo().join("charts/meshgate/templates/deployment.yaml"))
            .expect("deployment.yaml");
    let args: Vec<&str> = config["Cmd"]
        .as_array()
        .expect("Cmd")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for flag in ["--tls-cert", "--tls-key", "--config"] {
        let at = args
            .iter()
            .position(|a| *a == flag)
            .unwrap_or_else(|| panic!("{flag} in {args:?}"));
        let path = args[at + 1];
        assert!(
            deployment.contains(&format!("{flag}={path}")),
            "the chart passes {flag}={path}"
        );
        let dir = path.rsplit_once('/').expect("a directory").0;
        assert!(
            deployment.contains(&format!("mountPath: {dir}")),
            "the chart mounts {dir}"
        );
    }
}
