//! Native policies: the stateless rules as admission policies the API server
//! evaluates itself, so they hold while meshgate's pods are down.
//!
//! i22-sync's minimal module: the lead replaces it with i22-cel's at merge
//! (which adds `validating`); `compile` here calls the mutating part only.

use serde_json::Value;

use crate::config::Config;

pub mod mutating;
pub mod sync;

/// The label every native object carries, with [`NATIVE_LABEL`]: how sync
/// and uninstall find what meshgate owns.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "meshgate";
pub const NATIVE_LABEL: &str = "meshgate.io/native-policy";

/// Every object to apply, in apply order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativePolicies {
    pub objects: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("{rule}: no native form for {what}")]
    Unsupported { rule: &'static str, what: String },
}

/// The native policies for `config`.
pub fn compile(config: &Config) -> Result<NativePolicies, NativeError> {
    let mut objects = validating(config)?;
    objects.extend(mutating::compile(config)?);
    Ok(NativePolicies { objects })
}

/// Seam for i22-cel's `validating::compile`.
fn validating(_config: &Config) -> Result<Vec<Value>, NativeError> {
    Ok(Vec::new())
}

/// `metadata` of a native object named `name`.
pub fn metadata(name: &str) -> Value {
    serde_json::json!({
        "name": name,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, NATIVE_LABEL: "true"},
    })
}
