//! The release pipeline publishes what the chart and the README promise: the
//! image the chart pulls by default, at the chart's appVersion, which is the
//! crate's version; CLI archives named `meshgate-<version>-<target>.tar.gz`.
//! actionlint checks the workflow's syntax (scripts/lint-workflows.sh, run by
//! .ci/run); this test checks that it agrees with the rest of the repository.

use std::path::Path;

use serde_yaml_ng::Value;

fn yaml(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{} is not a string: {at:?}", path.join(".")))
}

#[test]
fn the_release_publishes_the_image_the_chart_pulls_by_default() {
    let release = yaml(".github/workflows/release.yml");
    let values = yaml("charts/meshgate/values.yaml");
    assert_eq!(
        str_at(&release, &["env", "IMAGE"]),
        str_at(&values, &["image", "repository"]),
        "release.yml pushes the image the chart's values.yaml pulls"
    );
    let build = &release["jobs"]["image"]["steps"]
        .as_sequence()
        .expect("image job steps")
        .iter()
        .find(|step| step["id"].as_str() == Some("build"))
        .expect("a step with id build")["with"];
    assert_eq!(
        str_at(build, &["platforms"]),
        "linux/amd64,linux/arm64",
        "multi-arch image"
    );
    assert_eq!(
        str_at(build, &["tags"]),
        "${{ env.IMAGE }}:${{ needs.version.outputs.version }}",
        "the image is tagged with the version the chart's appVersion names"
    );
}

#[test]
fn the_chart_app_version_is_the_crate_version() {
    let chart = yaml("charts/meshgate/Chart.yaml");
    assert_eq!(
        str_at(&chart, &["appVersion"]),
        env!("CARGO_PKG_VERSION"),
        "the chart's default image tag is its appVersion: keep it equal to Cargo.toml's version"
    );
}

#[test]
fn cli_archives_are_built_for_the_documented_targets_and_signed_steps_exist() {
    let release = yaml(".github/workflows/release.yml");
    let targets: Vec<&str> = release["jobs"]["cli"]["strategy"]["matrix"]["include"]
        .as_sequence()
        .expect("cli matrix")
        .iter()
        .map(|row| str_at(row, &["target"]))
        .collect();
    assert_eq!(
        targets,
        ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]
    );
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml"),
    )
    .expect("release.yml");
    for needle in [
        r#"name="meshgate-$VERSION-$TARGET""#,
        "cosign sign --yes \"$IMAGE@$DIGEST\"",
        "cosign attest --yes --type spdxjson",
        "helm push",
        "SHA256SUMS",
    ] {
        assert!(text.contains(needle), "release.yml lacks {needle}");
    }
    // Every third-party action is pinned by commit, not by a movable tag.
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:"))
    {
        let reference = line.split('@').nth(1).unwrap_or_default();
        let sha = reference.split_whitespace().next().unwrap_or_default();
        assert!(
            sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "action not pinned by commit: {line}"
        );
    }
}

#[test]
fn the_dockerfile_pins_its_bases_by_digest_and_runs_as_nonroot_without_a_shell_healthcheck() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    for arg in ["RUST_IMAGE", "RUNTIME_IMAGE"] {
        let line = dockerfile
            .lines()
            .find(|l| l.starts_with(&format!("ARG {arg}=")))
            .unwrap_or_else(|| panic!("no ARG {arg}"));
        let digest = line.split("@sha256:").nth(1).unwrap_or_default();
        assert!(
            digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{arg} is not pinned by digest: {line}"
        );
    }
    assert!(dockerfile.contains("distroless/cc-debian12:nonroot@sha256:"));
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(!dockerfile.contains("\nHEALTHCHECK"));
}

/// Every path the Dockerfile copies from the build context is let through
/// by .dockerignore (which ignores everything else), and the builder runs
/// the profile-guided build by default, the plain build with PGO=false.
#[test]
fn the_dockerfile_copies_only_what_dockerignore_lets_through_and_builds_with_pgo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    let allowed: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().skip(1).collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(copied.contains(&"scripts/pgo.sh"), "{copied:?}");
    for path in copied {
        assert!(
            allowed.contains(&path) && root.join(path).exists(),
            "the Dockerfile copies {path}, which .dockerignore leaves out or does not exist"
        );
    }
    assert!(dockerfile.contains("\nARG PGO=true\n"));
    assert!(dockerfile.contains("bash scripts/pgo.sh /out/meshgate"));
    let build_image =
        std::fs::read_to_string(root.join("scripts/build-image.sh")).expect("build-image.sh");
    assert!(build_image.contains("--build-arg PGO=false"));
}

/// The profile-guided build trains on every review scripts/load.sh measures
/// (endpoint and fixture), so no measured path goes unprofiled: pgo.sh keeps
/// its own copy of the list because the image's build context has no
/// load.sh.
#[test]
fn the_pgo_build_trains_on_every_load_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).expect(path);
    let load = read("scripts/load.sh");
    let table = load
        .split_once("ALL_SCENARIOS=(")
        .and_then(|(_, rest)| rest.split_once("\n)"))
        .expect("load.sh's ALL_SCENARIOS")
        .0;
    let measured: std::collections::BTreeSet<String> = table
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.trim().trim_matches('"').split_whitespace().collect();
            let path = words.get(1)?.strip_prefix('/')?;
            Some(format!("{path} {}", words.get(2)?))
        })
        .collect();
    let pgo = read("scripts/pgo.sh");
    let list = pgo
        .split_once("for scenario in ")
        .and_then(|(_, rest)| rest.split_once("; do"))
        .expect("pgo.sh's scenario loop")
        .0;
    let trained: std::collections::BTreeSet<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert_eq!(measured.len(), 5, "{measured:?}");
    assert_eq!(trained, measured);
}
