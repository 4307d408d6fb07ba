//! `meshgate policies`: the native policies on stdout, for GitOps users.

use meshgate::config::Config;
use serde_json::Value;

/// `meshgate policies` prints what `compile` returns, with the config file
/// and the own namespace applied as in `serve`.
#[test]
fn the_policies_command_prints_the_compiled_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "mode: audit\n").unwrap();
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args([
                "policies",
                "--config",
                file.to_str().unwrap(),
                "--own-namespace",
                "mesh-ops",
                "-o",
                format,
            ])
            .env_remove("MESHGATE_NAMESPACE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let config = Config::from_yaml("mode: audit")
        .unwrap()
        .with_own_namespace("mesh-ops");
    let expected = meshgate::native::compile(&config).unwrap().objects;
    let list: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(list["items"].as_array().unwrap(), &expected);
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&run("yaml"))
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(documents, expected);
    assert!(list.to_string().contains("mesh-ops"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["policies", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
