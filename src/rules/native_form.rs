//! A rule's CEL form, as its row in [`crate::rules::RULES`] names it: the
//! types live here, below the rules, so the rule rows can hold them without
//! importing `crate::native` (which compiles them into the API server's
//! objects and re-exports these types).

use crate::config::Config;
use crate::kinds::Kind;

/// A rule's CEL form.
#[derive(Debug)]
pub struct NativeRule {
    pub target: Target,
    /// Extra CEL variables, in order (each may read the ones before). For
    /// workloads the compiler first declares `template` (the object that
    /// holds the pod's metadata and spec), `spec`, `labels`, `annotations`,
    /// `containers` and `initContainers`, wherever the kind keeps them.
    pub variables: &'static [Variable],
    /// Variables computed from the running configuration (name, CEL
    /// literal), declared before `variables`: a rule whose verdict depends
    /// on configuration gets the configured values compiled in. Their
    /// `old_` copies are the same expressions, untranslated.
    pub config: Option<ConfigValues>,
    pub checks: &'static [NativeCheck],
}

/// A rule's configured values: (variable name, CEL literal) pairs.
pub type ConfigValues = fn(&Config) -> Vec<(&'static str, String)>;

/// What a native rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Pods and every pod controller of [`crate::kinds::TABLE`].
    Workloads,
    One(Kind),
}

/// One validation: like one kind of finding of the Rust rule.
#[derive(Debug)]
pub struct NativeCheck {
    /// CEL, true when the object passes.
    pub expression: &'static str,
    /// CEL string: the finding's message (describes the field).
    pub message: &'static str,
    /// CEL string: the fix.
    pub fix: &'static str,
    /// Advice rather than a hole: reported at audit level at most, like an
    /// advisory [`crate::rules::Finding`].
    pub advisory: bool,
}

/// One CEL variable: (name, expression).
pub type Variable = (&'static str, &'static str);

/// Groups of variables in one list, for a rule that reads shared ones
/// (`crate::injection::cel`); `N` is checked when the constant is built.
pub const fn variables<const N: usize>(groups: &[&[Variable]]) -> [Variable; N] {
    let mut out = [("", ""); N];
    let mut at = 0;
    let mut group = 0;
    while group < groups.len() {
        let mut i = 0;
        while i < groups[group].len() {
            out[at] = groups[group][i];
            at += 1;
            i += 1;
        }
        group += 1;
    }
    assert!(at == N, "the variable count does not match the groups");
    out
}

/// A CEL string literal: JSON's escapes are CEL's.
pub fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}
