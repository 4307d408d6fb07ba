//! The documentation book (`docs/`, mdBook) holds together, offline: every
//! relative link in the book, the README and the chart's README leads to a
//! file that exists and, with a fragment, to a heading (or explicit id) in
//! it; SUMMARY.md lists every page and only pages that exist; every rule of
//! the catalogue has its page (the URL in SARIF, denials and `meshgate
//! rules`); the README's and the native-policies page's "where each rule
//! runs" tables agree with the rule table. `.ci/run` also builds the book
//! with mdBook.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn book() -> PathBuf {
    Path::new(ROOT).join("docs/src")
}

fn pages(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            pages(&path, found);
        } else if path.extension().is_some_and(|e| e == "md") {
            found.push(path);
        }
    }
}

/// mdBook's `normalize_id`: lower case; alphanumerics, `-` and `_` kept;
/// whitespace becomes `-`; the rest is dropped.
fn normalize_id(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                Some(c.to_ascii_lowercase())
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// A page's link targets and the ids its headings (and `<a id>`/`id="..."`
/// HTML) give it; repeated headings get `-1`, `-2`, as mdBook numbers them.
struct Page {
    links: Vec<String>,
    ids: BTreeSet<String>,
}

fn read_page(path: &Path) -> Page {
    let text = std::fs::read_to_string(path).unwrap();
    let mut links = Vec::new();
    let mut ids = BTreeSet::new();
    let mut heading: Option<String> = None;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for event in Parser::new_ext(&text, Options::all()) {
        match event {
            Event::Start(Tag::Link { dest_url, .. })
            | Event::Start(Tag::Image { dest_url, .. }) => links.push(dest_url.to_string()),
            Event::Start(Tag::Heading { id, .. }) => {
                if let Some(id) = id {
                    ids.insert(id.to_string());
                }
                heading = Some(String::new());
            }
            Event::Text(t) | Event::Code(t) if heading.is_some() => {
                heading.as_mut().unwrap().push_str(&t)
            }
            Event::End(TagEnd::Heading(_)) => {
                let base = normalize_id(&heading.take().unwrap());
                let n = counts.entry(base.clone()).or_default();
                ids.insert(if *n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                });
                *n += 1;
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                for part in html.split("id=\"").skip(1) {
                    if let Some(id) = part.split('"').next() {
                        ids.insert(id.to_owned());
                    }
                }
                for part in html.split("href=\"").skip(1) {
                    if let Some(href) = part.split('"').next() {
                        links.push(href.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Page { links, ids }
}

/// `base/../x` without touching the file system.
fn resolve(from: &Path, target: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in from.parent().unwrap().join(target).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn check_links(files: &[PathBuf]) -> Vec<String> {
    let mut cache: BTreeMap<PathBuf, Page> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in files {
        let page = read_page(file);
        for link in &page.links {
            if link.contains("://") || link.starts_with("mailto:") || link.is_empty() {
                continue;
            }
            let (path, fragment) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                resolve(file, path)
            };
            // The book links .md pages; the built book serves them as .html.
            let target = if target.extension().is_some_and(|e| e == "html") {
                target.with_extension("md")
            } else {
                target
            };
            if !target.exists() {
                broken.push(format!("{}: {link}: no such file", file.display()));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                continue;
            }
            let ids = &cache
                .entry(target.clone())
                .or_insert_with(|| read_page(&target))
                .ids;
            if !ids.contains(fragment) {
                broken.push(format!(
                    "{}: {link}: no heading or id #{fragment} in {}",
                    file.display(),
                    target.display()
                ));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut files = Vec::new();
    pages(&book(), &mut files);
    assert!(files.len() > 20, "the book has its pages: {files:?}");
    files.push(Path::new(ROOT).join("README.md"));
    files.push(Path::new(ROOT).join("charts/meshgate/README.md"));
    let broken = check_links(&files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_finds_a_broken_anchor_and_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("a.md");
    std::fs::write(
        &page,
        "# Title\n\n## Sub `code` (x)\n\n[ok](#sub-code-x) [bad](#nope) [gone](b.md) [ok](a.md#title)\n",
    )
    .unwrap();
    let broken = check_links(&[page]);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("#nope"));
    assert!(broken[1].contains("b.md: no such file"));
}

#[test]
fn summary_lists_every_page_and_only_pages_that_exist() {
    let summary = book().join("SUMMARY.md");
    let listed: BTreeSet<PathBuf> = read_page(&summary)
        .links
        .iter()
        .map(|l| resolve(&summary, l))
        .collect();
    let mut files = Vec::new();
    pages(&book(), &mut files);
    let on_disk: BTreeSet<PathBuf> = files.into_iter().filter(|p| *p != summary).collect();
    let missing: Vec<_> = on_disk.difference(&listed).collect();
    assert!(missing.is_empty(), "pages not in SUMMARY.md: {missing:?}");
    let dangling: Vec<_> = listed.difference(&on_disk).collect();
    assert!(
        dangling.is_empty(),
        "SUMMARY.md lists missing pages: {dangling:?}"
    );
}

#[test]
fn every_rule_has_its_page_at_the_url_meshgate_links() {
    let rules = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["rules", "-o", "json"])
        .output()
        .unwrap();
    let rules: serde_json::Value = serde_json::from_slice(&rules.stdout).unwrap();
    let mut pages_on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(book().join("rules")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(id) = name.strip_suffix(".md").filter(|n| *n != "index") {
            pages_on_disk.insert(id.to_owned());
        }
    }
    let mut ids = BTreeSet::new();
    for rule in rules["rules"].as_array().unwrap() {
        let id = rule["id"].as_str().unwrap();
        ids.insert(id.to_owned());
        assert_eq!(
            rule["docs"],
            format!("https://meshgate.github.io/meshgate/rules/{id}.html")
        );
        let text = std::fs::read_to_string(book().join(format!("rules/{id}.md"))).unwrap();
        assert!(
            text.starts_with(&format!("# `{id}`")),
            "rules/{id}.md title"
        );
        assert!(
            text.contains(&format!(
                "| severity | {} |",
                rule["severity"].as_str().unwrap()
            )),
            "rules/{id}.md states the severity of the rule table"
        );
    }
    assert_eq!(
        ids, pages_on_disk,
        "one page per rule, no page without a rule"
    );
}

#[test]
fn the_rule_index_lists_every_rule_with_its_severity() {
    let index = std::fs::read_to_string(book().join("rules/index.md")).unwrap();
    for rule in meshgate::rules::RuleId::ALL {
        let row = format!(
            "| [`{id}`]({id}.md) | {} | {} |",
            rule.severity(),
            rule.category(),
            id = rule.as_str()
        );
        assert!(index.contains(&row), "rules/index.md lacks {row}");
    }
}

#[test]
fn values_yaml_and_the_sizing_page_give_the_same_sizing_rule() {
    let sizing = std::fs::read_to_string(book().join("operations/sizing.md")).unwrap();
    let values =
        std::fs::read_to_string(Path::new(ROOT).join("charts/meshgate/values.yaml")).unwrap();
    assert!(sizing.contains("20 MiB + 2 KiB × objects and the limit to 20 MiB + 5 KiB × objects"));
    assert!(values.contains("request 20 MiB + 2 KiB per object, limit 20 MiB + 5 KiB"));
}

/// Every long flag of `meshgate serve`, `audit` and `rules` is documented
/// in the reference pages (a flag added to the CLI without docs fails).
#[test]
fn every_cli_flag_is_in_the_reference() {
    let mut reference = String::new();
    for page in ["reference/serve.md", "reference/audit.md"] {
        reference += &std::fs::read_to_string(book().join(page)).unwrap();
    }
    let mut missing = Vec::new();
    for command in ["serve", "audit", "rules"] {
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(help.stdout).unwrap();
        for word in help.split_whitespace() {
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let flag: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if flag.is_empty() || flag == "help" || flag == "version" {
                continue;
            }
            if !reference.contains(&format!("--{flag}")) {
                missing.push(format!("meshgate {command} --{flag}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "undocumented flags: {missing:?}");
}

/// The rule column and the second column of every table row in `text` that
/// starts with a rule id: `` | `rule` | ... `` or `` | [`rule`](...) | ... ``.
fn rule_rows(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix('|')?.split('|').map(str::trim).collect();
            let rule = cells.first()?.trim_start_matches('[').split('`').nth(1)?;
            meshgate::rules::RuleId::ALL
                .iter()
                .any(|r| r.as_str() == rule)
                .then(|| {
                    (
                        rule.to_owned(),
                        cells.get(1).copied().unwrap_or("").to_owned(),
                    )
                })
        })
        .collect()
}

/// The README's and the native-policies page's "where each rule runs"
/// tables list every rule, and say a native policy exactly for the rules
/// whose row carries a CEL form (the certificate mount is its own policy).
#[test]
fn where_each_rule_runs_agrees_with_the_rule_table() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let page = std::fs::read_to_string(book().join("concepts/native-policies.md")).unwrap();
    let (readme, page) = (rule_rows(&readme), rule_rows(&page));
    for rule in meshgate::rules::RuleId::ALL {
        let id = rule.as_str();
        let native = rule.row().native.is_some();
        let said = &readme[id];
        let mount = *rule == meshgate::rules::RuleId::WorkloadCertificates;
        assert_eq!(said == "yes", native, "README on {id}: {said}");
        assert!(
            native || mount || said.starts_with("no:"),
            "README on {id}: {said}"
        );
        let policy = &page[id];
        assert_eq!(
            policy.contains(&format!("`meshgate-{id}`")),
            native,
            "native-policies.md on {id}: {policy}"
        );
    }
    assert_eq!(readme.len(), meshgate::rules::RuleId::ALL.len());
    assert_eq!(page.len(), meshgate::rules::RuleId::ALL.len());
}
