//! The pod spec as the rules and the mutation read it. Decoding k8s-openapi's
//! `PodSpec` built every probe, resource, port and environment value of every
//! container only to drop them: most of a review's CPU. These views name only
//! what some rule or the mutation reads; serde skips everything else without
//! building it. The small typed parts (security contexts, volume mounts,
//! Istio's own containers' env) stay k8s-openapi types.
//!
//! A rule that needs a new field adds it here; the tests in `lean.rs` check
//! the view against k8s-openapi's full decode of what a real API server sends.

use k8s_openapi::api::core::v1::{
    EnvVar, PodSecurityContext, SecurityContext, Volume, VolumeMount,
};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The [`PodSpecView`] fields the rules read: all but `volumes`, which only
/// the mutation reads. The background audit and `meshgate audit` keep only
/// these of the pods they hold (`background::projection`).
pub const POD_SPEC_FIELDS_READ_BY_RULES: &[&str] = &[
    "containers",
    "initContainers",
    "ephemeralContainers",
    "hostNetwork",
    "serviceAccountName",
    "serviceAccount",
    "securityContext",
];

/// The [`ContainerView`] fields the rules read: all but `volumeMounts`
/// (the mutation's), `env` only where [`rules_read_env_of`] says.
pub const CONTAINER_FIELDS_READ_BY_RULES: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "securityContext",
    "restartPolicy",
];

/// The rules read the environment of the containers that run
/// `istio-iptables` (its flags); the mutation also reads `istio-proxy`'s.
pub fn rules_read_env_of(container: &str) -> bool {
    container == crate::injection::INIT_CONTAINER
        || container == crate::injection::VALIDATION_CONTAINER
}

/// Istio's injector names its containers `istio-proxy`, `istio-init` and
/// `istio-validation`; only their environment is read (the interception
/// flags, the proxy's `OUTPUT_CERTS`). An application's environment, often
/// hundreds of variables, is never decoded.
pub fn is_istio_container(name: &str) -> bool {
    name.starts_with("istio-")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    #[serde(default)]
    pub containers: Vec<ContainerView>,
    pub init_containers: Option<Vec<ContainerView>>,
    pub ephemeral_containers: Option<Vec<ContainerView>>,
    pub host_network: Option<bool>,
    pub service_account_name: Option<String>,
    /// The deprecated alias of `serviceAccountName`.
    pub service_account: Option<String>,
    pub security_context: Option<PodSecurityContext>,
    pub volumes: Option<Vec<VolumeView>>,
}

/// A container, init container or ephemeral container.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "ContainerFields")]
pub struct ContainerView {
    pub name: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// Decoded for Istio's containers only ([`is_istio_container`]); `None`
    /// for any other container, whatever it sets.
    pub env: Option<Vec<EnvVar>>,
    pub security_context: Option<SecurityContext>,
    pub restart_policy: Option<String>,
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

/// What is read of a container as it arrives: the environment kept as text
/// until the name says whose it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerFields {
    name: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    env: Option<Box<RawValue>>,
    security_context: Option<SecurityContext>,
    restart_policy: Option<String>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

impl TryFrom<ContainerFields> for ContainerView {
    type Error = serde_json::Error;

    fn try_from(fields: ContainerFields) -> Result<Self, Self::Error> {
        let env = match fields.env {
            Some(raw) if is_istio_container(&fields.name) => serde_json::from_str(raw.get())?,
            _ => None,
        };
        Ok(ContainerView {
            name: fields.name,
            command: fields.command,
            args: fields.args,
            env,
            security_context: fields.security_context,
            restart_policy: fields.restart_policy,
            volume_mounts: fields.volume_mounts,
        })
    }
}

/// A pod volume: its name, and its definition kept as written. Only the
/// mutation looks inside one, the one its certificate volume would replace.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Box<RawValue>")]
pub struct VolumeView {
    pub name: String,
    definition: Box<RawValue>,
}

impl VolumeView {
    /// The volume as k8s-openapi types it.
    pub fn decoded(&self) -> Result<Volume, serde_json::Error> {
        serde_json::from_str(self.definition.get())
    }
}

impl TryFrom<Box<RawValue>> for VolumeView {
    type Error = serde_json::Error;

    fn try_from(definition: Box<RawValue>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let Named { name } = serde_json::from_str(crate::subject::object_text(definition.get())?)?;
        Ok(VolumeView { name, definition })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(spec: serde_json::Value) -> Result<PodSpecView, serde_json::Error> {
        serde_json::from_str(&spec.to_string())
    }

    #[test]
    fn only_istio_containers_keep_their_environment() {
        let spec = view(json!({"containers": [
            {"name": "app", "env": [{"name": "A", "value": "1"}]},
            {"name": "istio-proxy", "env": [{"name": "OUTPUT_CERTS", "value": "/certs"}]}
        ]}))
        .unwrap();
        assert_eq!(spec.containers[0].env, None);
        let proxy_env = spec.containers[1].env.as_deref().unwrap();
        assert_eq!(proxy_env[0].name, "OUTPUT_CERTS");
        assert_eq!(proxy_env[0].value.as_deref(), Some("/certs"));
    }

    #[test]
    fn what_is_read_must_have_its_type() {
        // Istio's flags are read from istio-init's env: a wrong shape there
        // is an error, not an empty environment.
        let bad_env = json!({"initContainers": [{"name": "istio-init", "env": {"A": "1"}}]});
        assert!(view(bad_env).is_err());
        assert!(view(json!({"containers": [{"image": "no-name"}]})).is_err());
        assert!(view(json!({"containers": [{"name": "c", "securityContext": []}]})).is_err());
        assert!(view(json!({"volumes": [["certs"]]})).is_err());
        assert!(view(json!({"hostNetwork": "yes"})).is_err());
    }

    #[test]
    fn volumes_keep_their_definition() {
        let spec = view(json!({"volumes": [
            {"name": "certs", "emptyDir": {"medium": "Memory"}}
        ]}))
        .unwrap();
        let volume = &spec.volumes.as_deref().unwrap()[0];
        assert_eq!(volume.name, "certs");
        let decoded = volume.decoded().unwrap();
        assert_eq!(decoded.empty_dir.unwrap().medium.as_deref(), Some("Memory"));
    }
}
