//! The Quickstart page's convention (docs/src/quickstart.md), as
//! tests/envtest_quickstart.rs reads it:
//! - every non-blank line of a ```` ```sh ```` block is one command;
//! - a ```` ```text ```` block right after a ```` ```sh ```` block shows the
//!   output of that block's last command (stdout and stderr, as a terminal
//!   shows them): each of its lines must be a line of the real output, in
//!   order (the page may leave lines out; ages such as `3s` match any age).
//!   A shown `Error from server` means the command must fail;
//! - ```` ```console ```` blocks (the cluster's set-up) are not run.

/// One command of the page and the output it shows, if any.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub command: String,
    pub shown: Option<Vec<String>>,
}

/// The page's steps, by the convention above.
pub fn steps(page: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut fence: Option<String> = None;
    // Whether the last block closed was a sh block, with only blank lines since.
    let mut after_sh = false;
    for line in page.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            match fence.take() {
                Some(closed) => after_sh = closed == "sh",
                None => {
                    let info = info.trim().to_owned();
                    if info == "text" && after_sh {
                        let last = steps.last_mut().expect("a sh block before");
                        assert!(last.shown.is_none(), "two outputs for {:?}", last.command);
                        last.shown = Some(Vec::new());
                    }
                    if info != "text" || !after_sh {
                        after_sh = false;
                    }
                    fence = Some(info);
                }
            }
            continue;
        }
        match fence.as_deref() {
            Some("sh") if !line.trim().is_empty() => {
                assert!(!line.ends_with('\\'), "one command per line: {line}");
                steps.push(Step {
                    command: line.trim().to_owned(),
                    shown: None,
                });
            }
            Some("text") if after_sh => {
                if let Some(shown) = steps.last_mut().and_then(|s| s.shown.as_mut()) {
                    shown.push(line.to_owned());
                }
            }
            None if !line.trim().is_empty() => after_sh = false,
            _ => {}
        }
    }
    assert!(fence.is_none(), "an unclosed code block in the page");
    steps
}

/// `meshgate-<uid>`: a report's name, different on every run.
fn is_report_name(word: &str) -> bool {
    word.strip_prefix("meshgate-").is_some_and(|uid| {
        uid.len() == 36
            && uid.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    })
}

/// A line as compared: whitespace collapsed, ages (`3s`, `2m10s`) as `AGE`,
/// report names (`meshgate-<uid>`) as `REPORT`.
fn normalized(line: &str) -> String {
    let is_age = |word: &str| {
        !word.is_empty()
            && word.chars().next().is_some_and(|c| c.is_ascii_digit())
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || "smhd".contains(c))
            && word.chars().last().is_some_and(|c| "smhd".contains(c))
    };
    line.split_whitespace()
        .map(|word| {
            if is_age(word) {
                "AGE"
            } else if is_report_name(word) {
                "REPORT"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether every shown line is a line of `output`, in order.
pub fn shows(shown: &[String], output: &str) -> bool {
    let mut actual = output.lines().map(normalized);
    shown
        .iter()
        .map(|l| normalized(l))
        .filter(|l| !l.is_empty())
        .all(|want| actual.any(|got| got == want))
}

pub fn expects_failure(step: &Step) -> bool {
    step.shown
        .as_ref()
        .is_some_and(|lines| lines.iter().any(|l| l.contains("Error from server")))
}
#[test]
fn the_page_convention_is_read_as_documented() {
    let page = "Intro\n```console\nkind create cluster\n```\n\n```sh\nkubectl a\n\nkubectl b\n```\n\n\
                ```text\nout 1\n```\nProse.\n```sh\nkubectl c\n```\nProse.\n```text\nnot an output\n```\n";
    assert_eq!(
        steps(page),
        [
            Step {
                command: "kubectl a".into(),
                shown: None
            },
            Step {
                command: "kubectl b".into(),
                shown: Some(vec!["out 1".into()])
            },
            Step {
                command: "kubectl c".into(),
                shown: None
            },
        ]
    );
    assert!(shows(
        &["meshgate 1 0  5s".into()],
        "NAME PASS\nmeshgate   1   0   2m10s\n"
    ));
    assert!(!shows(&["b".into(), "a".into()], "a\nb\n"));
    assert!(!shows(&["meshgate 2".into()], "meshgate 1\n"));
    let denied = Step {
        command: "kubectl apply -f x.yaml".into(),
        shown: Some(vec!["Error from server (Forbidden): ...".into()]),
    };
    assert!(expects_failure(&denied));
    assert!(!expects_failure(&steps(page)[1]));
}
