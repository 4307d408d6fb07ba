//! `meshgate audit` and the server's logs through the built binary: the
//! own-namespace exemption, runs that checked nothing, big inputs, and no
//! colour codes where no terminal reads them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn audit_stdin(args: &[&str], envs: &[(&str, &str)], input: &[u8]) -> Exited {
    let args: Vec<&str> = std::iter::once("audit")
        .chain(args.iter().copied())
        .collect();
    run_cli_with_input(&args, envs, input, Duration::from_secs(60))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template mg charts/meshgate -n meshgate`, as the issue ran it.
fn rendered_chart() -> Vec<u8> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/meshgate");
    let out = Command::new("helm")
        .args(["template", "mg", chart, "-n", "meshgate"])
        .output()
        .expect("helm (scripts/install-test-tools.sh installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

#[test]
fn auditing_the_chart_reports_nothing_on_meshgate_itself() {
    let chart = rendered_chart();
    let o = audit_stdin(&["-"], &[], &chart);
    let stdout = o.stdout.clone();
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", o.stderr.clone());
    assert!(!stdout.contains("DENY"), "{stdout}");
    assert!(stdout.contains("0 enforce-level findings"), "{stdout}");

    // Installed elsewhere, the flag or MESHGATE_NAMESPACE names it;
    // `meshgate` is then an ordinary namespace and its pods are judged.
    for (args, envs) in [
        (&["--own-namespace", "tools", "-"][..], &[][..]),
        (&["-"][..], &[("MESHGATE_NAMESPACE", "tools")][..]),
    ] {
        let o = audit_stdin(args, envs, &chart);
        let stdout = o.stdout.clone();
        assert_eq!(o.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("DENY"), "{stdout}");
        assert!(
            stdout.contains("Deployment meshgate/mg-meshgate"),
            "{stdout}"
        );
    }
}

#[test]
fn a_run_that_checked_no_object_says_so_and_exits_2() {
    let configmap = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n";
    for input in [&b""[..], &b"# only a comment\n---\n"[..], &configmap[..]] {
        let o = audit_stdin(&["-"], &[], input);
        assert_eq!(o.status.code(), Some(2), "{}", o.stdout.clone());
        assert!(
            o.stderr.clone().contains("checked 0 objects"),
            "{}",
            o.stderr.clone()
        );
        assert!(o.stdout.clone().contains("0 objects checked"));
    }
    // JSON output too: the report is printed, the status still says it.
    let o = audit_stdin(&["--output", "json", "-"], &[], configmap);
    assert_eq!(o.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["summary"]["objectsChecked"], 0);
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("meshgate test CA");
    let serving = ca.issue();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let mut args = serve_args(&cert, &key, None);
    let format = args.iter().position(|a| a == "json").unwrap();
    args[format] = "text".into();
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("MESHGATE_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains("listening"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(log.contains("listening"), "no listening line in {log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
    assert!(log.contains(" INFO "), "text format expected: {log}");
}

#[test]
fn yaml_line_numbers_stay_linear_in_the_number_of_documents() {
    // 80,000 lines of comments and separators (240 KB) took 25 s when each
    // separator re-read the lines before it.
    let mut input = "#\n".repeat(40_000);
    input.push_str(&"---\n".repeat(40_000));
    input.push_str("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let started = Instant::now();
    let o = audit_stdin(&["--output", "json", "-"], &[], input.as_bytes());
    let elapsed = started.elapsed();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        report["summary"]["objectsChecked"],
        1,
        "{}",
        o.stderr.clone()
    );
    assert_eq!(report["findings"][0]["line"], 80_001, "{report}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
