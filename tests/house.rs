//! The house rules of `src/`, read as Rust (syn), not as text:
//!
//! - no file over 400 lines before its inline `#[cfg(test)] mod`;
//! - no function over 60 lines (from `fn` to its closing brace);
//! - no circle in the `crate::` import graph between top-level modules.
//!
//! Test code is left out: files declared as `#[cfg(test)] mod x;`, items
//! under `#[cfg(test)]`, and `*_tests.rs` files. Paths inside macro calls
//! count too (their tokens are scanned for `crate::x`).
//!
//! `ALLOWED_*` below would list known exceptions; they are empty and should
//! stay so. An entry that no longer applies fails the test too, so the
//! lists only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::spanned::Spanned;
use syn::visit::{self, Visit};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 60;

/// Files over the limit, by path under `src/`.
const ALLOWED_FILES: &[&str] = &[];

/// Functions over the limit, as `path::name`.
const ALLOWED_FUNCTIONS: &[&str] = &[];

/// Import edges left out of the circle check, as `from -> to`.
const ALLOWED_EDGES: &[&str] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

struct SourceFile {
    /// Path under `src/`, with `/`.
    name: String,
    syntax: syn::File,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// The directory a file's child modules live in.
fn child_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new(""));
    match file.file_stem().and_then(|s| s.to_str()) {
        Some("mod" | "lib" | "main") => parent.to_owned(),
        Some(stem) => parent.join(stem),
        None => parent.to_owned(),
    }
}

/// Every non-test source file reachable from `lib.rs` and `main.rs`,
/// following `mod x;` (and `#[path]`) but not `#[cfg(test)] mod x;`.
fn source_files() -> Vec<SourceFile> {
    let root = src();
    let mut pending = vec![root.join("lib.rs"), root.join("main.rs")];
    let mut files = Vec::new();
    while let Some(path) = pending.pop() {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        pending.extend(child_files(&path, &syntax.items));
        let name = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        files.push(SourceFile { name, syntax });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

fn child_files(file: &Path, items: &[syn::Item]) -> Vec<PathBuf> {
    let dir = child_dir(file);
    let mut children = Vec::new();
    for item in items {
        let syn::Item::Mod(module) = item else {
            continue;
        };
        if is_cfg_test(&module.attrs) {
            continue;
        }
        if let Some((_, inline)) = &module.content {
            // An inline module's own `mod x;` live in a directory named after it.
            let nested = dir.join(module.ident.to_string()).join("mod.rs");
            children.extend(child_files(&nested, inline));
            continue;
        }
        let explicit = module.attrs.iter().find_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(file.parent().unwrap_or(Path::new("")).join(s.value())),
                _ => None,
            },
            _ => None,
        });
        let name = module.ident.to_string();
        let path = explicit.unwrap_or_else(|| {
            let flat = dir.join(format!("{name}.rs"));
            if flat.exists() {
                flat
            } else {
                dir.join(&name).join("mod.rs")
            }
        });
        children.push(path);
    }
    children
}

/// Lines before the first inline `#[cfg(test)] mod`, or all of them.
fn code_lines(file: &SourceFile) -> usize {
    let test_module = file.syntax.items.iter().find_map(|item| match item {
        syn::Item::Mod(m) if is_cfg_test(&m.attrs) && m.content.is_some() => Some(item.span()),
        _ => None,
    });
    match test_module {
        Some(span) => span.start().line - 1,
        None => file.syntax.span().end().line,
    }
}

/// What the visitor finds in one file's non-test code.
#[derive(Default)]
struct Found {
    functions: Vec<(String, usize)>,
    crate_modules: BTreeSet<String>,
}

impl Found {
    fn function(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        self.functions
            .push((sig.ident.to_string(), end + 1 - start));
    }

    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let flat: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        for (index, tree) in flat.iter().enumerate() {
            match tree {
                proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                proc_macro2::TokenTree::Ident(ident) if ident == "crate" => {
                    if let [proc_macro2::TokenTree::Punct(a), proc_macro2::TokenTree::Punct(b), proc_macro2::TokenTree::Ident(module), ..] =
                        &flat[index + 1..]
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            self.crate_modules.insert(module.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Found {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            _ => return visit::visit_item(self, item),
        };
        if !is_cfg_test(attrs) {
            visit::visit_item(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.function(&item.sig, &item.block);
        visit::visit_item_fn(self, item);
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if is_cfg_test(&item.attrs) {
            return;
        }
        self.function(&item.sig, &item.block);
        visit::visit_impl_item_fn(self, item);
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.function(&item.sig, block);
        }
        visit::visit_trait_item_fn(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" {
                self.crate_modules.insert(second.ident.to_string());
            }
        }
        visit::visit_path(self, path);
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if let syn::UseTree::Path(path) = &item.tree {
            if path.ident == "crate" {
                let mut names = Vec::new();
                use_heads(&path.tree, &mut names);
                self.crate_modules.extend(names);
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        visit::visit_macro(self, mac);
    }
}

/// The first names under `crate::` in a use tree (`crate::{a, b::c}`).
fn use_heads(tree: &syn::UseTree, names: &mut Vec<String>) {
    match tree {
        syn::UseTree::Path(p) => names.push(p.ident.to_string()),
        syn::UseTree::Name(n) => names.push(n.ident.to_string()),
        syn::UseTree::Rename(r) => names.push(r.ident.to_string()),
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| use_heads(t, names)),
        syn::UseTree::Glob(_) => {}
    }
}

fn found(file: &SourceFile) -> Found {
    let mut found = Found::default();
    found.visit_file(&file.syntax);
    found
}

/// The top-level module a file belongs to (`None` for lib.rs and main.rs).
fn top_module(name: &str) -> Option<String> {
    let first = name.split('/').next()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(module, "lib" | "main")).then(|| module.to_owned())
}

fn is_test_file(name: &str) -> bool {
    name.ends_with("_tests.rs") || name.ends_with("/tests.rs")
}

fn import_graph(files: &[SourceFile]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| !is_test_file(&f.name)) {
        let Some(from) = top_module(&file.name) else {
            continue;
        };
        for to in found(file).crate_modules {
            if to != from && to != "self" {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

/// Edges `a -> b` that lie on a circle: `b` reaches `a`.
fn circle_edges(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(node) = stack.pop() {
            if node == to {
                return true;
            }
            if seen.insert(node.clone()) {
                stack.extend(graph.get(&node).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut edges = Vec::new();
    for (from, targets) in graph {
        for to in targets {
            if reaches(to, from) {
                edges.push(format!("{from} -> {to}"));
            }
        }
    }
    edges
}

#[test]
fn no_file_is_over_400_lines_before_its_tests() {
    let mut over = Vec::new();
    let mut names = BTreeSet::new();
    for file in source_files().iter().filter(|f| !is_test_file(&f.name)) {
        names.insert(file.name.clone());
        let lines = code_lines(file);
        if lines > MAX_FILE_LINES && !ALLOWED_FILES.contains(&file.name.as_str()) {
            over.push(format!("{}: {lines} lines", file.name));
        }
    }
    assert!(
        over.is_empty(),
        "files over {MAX_FILE_LINES} lines: {over:#?}"
    );
    for allowed in ALLOWED_FILES {
        let file = source_files()
            .into_iter()
            .find(|f| f.name == *allowed)
            .unwrap_or_else(|| panic!("ALLOWED_FILES: {allowed} is gone: remove it"));
        assert!(
            code_lines(&file) > MAX_FILE_LINES,
            "ALLOWED_FILES: {allowed} is within the limit now: remove it"
        );
    }
}

#[test]
fn no_function_is_over_60_lines() {
    let mut over = Vec::new();
    let mut seen = BTreeSet::new();
    for file in source_files().iter().filter(|f| !is_test_file(&f.name)) {
        for (name, lines) in found(file).functions {
            let key = format!("{}::{name}", file.name);
            if lines > MAX_FN_LINES {
                seen.insert(key.clone());
                if !ALLOWED_FUNCTIONS.contains(&key.as_str()) {
                    over.push(format!("{key}: {lines} lines"));
                }
            }
        }
    }
    assert!(
        over.is_empty(),
        "functions over {MAX_FN_LINES} lines: {over:#?}"
    );
    let stale: Vec<_> = ALLOWED_FUNCTIONS
        .iter()
        .filter(|f| !seen.contains(**f))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED_FUNCTIONS within the limit now (or gone): remove {stale:?}"
    );
}

#[test]
fn no_circle_between_top_level_modules() {
    let mut graph = import_graph(&source_files());
    for edge in ALLOWED_EDGES {
        let (from, to) = edge.split_once(" -> ").unwrap_or_else(|| panic!("{edge}"));
        let present = graph
            .get_mut(from)
            .is_some_and(|targets| targets.remove(to));
        assert!(present, "ALLOWED_EDGES: {edge} is gone: remove it");
    }
    let circles = circle_edges(&graph);
    assert!(
        circles.is_empty(),
        "edges on an import circle between top-level modules: {circles:#?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    let files = source_files();
    assert!(files.iter().any(|f| f.name == "rules/sidecar_required.rs"));
    // `#[cfg(test)] mod tests;` files are test code.
    assert!(!files.iter().any(|f| f.name == "injection/tests.rs"));
    let graph = import_graph(&files);
    assert!(graph["rules"].contains("subject"));
    assert!(!graph.contains_key("vocab"), "vocab is a leaf");
    let functions = found(files.iter().find(|f| f.name == "kinds/row.rs").unwrap()).functions;
    let row = functions.iter().find(|(name, _)| name == "row").unwrap();
    assert_eq!(row.1, 3, "`row` spans three lines");
}
