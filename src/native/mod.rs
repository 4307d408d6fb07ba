//! Native policies: the rules whose verdict needs only the object, its
//! namespace's labels and meshgate's configuration, compiled into CEL
//! admission policies the API server evaluates itself. They keep holding,
//! with no network hop, while meshgate's pods are down or rolling.
//!
//! The CEL of a rule lives next to the rule, as its `NATIVE` const, and is
//! named by the rule's row in [`crate::rules::RULES`]; [`compile`] turns
//! the rows and the running configuration into the objects to apply.
//! Exemption objects will become match conditions the same way the config
//! file's exemptions do ([`exemptions::exemption_conditions`]).

pub mod exemptions;
pub mod mutating;
pub mod sync;
pub mod validating;

use std::process::ExitCode;

use crate::cli::{PoliciesArgs, PoliciesOutput};
use crate::config::Config;
use crate::exemption::ExemptionObject;

/// Labels every native object carries: the sync removes labelled objects
/// no longer compiled, and nothing else.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshgate");
pub const NATIVE_LABEL: (&str, &str) = ("meshgate.io/native-policy", "true");
/// Every object's name starts with this.
pub const NAME_PREFIX: &str = "meshgate-";

pub use crate::rules::native_form::{ConfigValues, NativeCheck, NativeRule, Target};

/// Every object to apply, in apply order (policies before their bindings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativePolicies {
    pub objects: Vec<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error("{rule}: no native form for {what}")]
    Unsupported { rule: &'static str, what: String },
    #[error("cannot serialise the native policy {name}: {source}")]
    Serialise {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The native policies for `config`: ValidatingAdmissionPolicies and their
/// bindings, then the certificate-mount MutatingAdmissionPolicy and its
/// binding.
pub fn compile(config: &Config) -> Result<NativePolicies, NativeError> {
    compile_with(config, &[])
}

/// [`compile`], with the exemption objects that are active now lifting
/// what they cover.
pub fn compile_with(
    config: &Config,
    exemptions: &[ExemptionObject],
) -> Result<NativePolicies, NativeError> {
    let mut objects = validating::compile(config, exemptions)?;
    objects.extend(mutating::compile(config, exemptions)?);
    Ok(NativePolicies { objects })
}

/// `metadata` of a native object named `name`, with both labels.
pub fn metadata(name: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "labels": {MANAGED_BY.0: MANAGED_BY.1, NATIVE_LABEL.0: NATIVE_LABEL.1},
    })
}

/// `meshgate policies`: the compiled objects on stdout.
pub fn run(args: &PoliciesArgs) -> ExitCode {
    let config = match &args.config {
        Some(path) => Config::from_file(path),
        None => Ok(Config::default()),
    };
    let printed = config
        .map_err(|e| e.to_string())
        .map(|c| c.with_own_namespace(&args.own_namespace))
        .and_then(|c| compile(&c).map_err(|e| e.to_string()))
        .and_then(|p| print(&p, args.output));
    match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshgate: {error}");
            ExitCode::from(2)
        }
    }
}

/// YAML documents, or one JSON `List`.
pub fn print(policies: &NativePolicies, output: PoliciesOutput) -> Result<String, String> {
    match output {
        PoliciesOutput::Json => {
            let list =
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": policies.objects});
            serde_json::to_string_pretty(&list)
                .map(|text| text + "\n")
                .map_err(|e| e.to_string())
        }
        PoliciesOutput::Yaml => {
            let mut out = String::new();
            for object in &policies.objects {
                out.push_str("---\n");
                out.push_str(&serde_yaml_ng::to_string(object).map_err(|e| e.to_string())?);
            }
            Ok(out)
        }
    }
}
