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
    EnvVar, Lifecycle, PodSecurityContext, SecurityContext, Volume, VolumeMount,
};
use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
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
/// (the mutation's); `env` only where [`rules_read_env`] says, `lifecycle`
/// only where [`rules_read_lifecycle_of`] does.
pub const CONTAINER_FIELDS_READ_BY_RULES: &[&str] = &[
    "name",
    "command",
    "args",
    "env",
    "securityContext",
    "restartPolicy",
    "lifecycle",
];

/// Whether a rule reads the variable `var` of `container`: all of the
/// containers that run `istio-iptables` (its flags), and `istio-proxy`'s
/// `PROXY_CONFIG` (its status port). The mutation reads more of
/// `istio-proxy`'s.
pub fn rules_read_env(container: &str, var: &str) -> bool {
    use crate::istio::names::{
        INIT_CONTAINER, PROXY_CONFIG_ENV, PROXY_CONTAINER, VALIDATION_CONTAINER,
    };
    container == INIT_CONTAINER
        || container == VALIDATION_CONTAINER
        || (container == PROXY_CONTAINER && var == PROXY_CONFIG_ENV)
}

/// The rules read `istio-proxy`'s preStop hook, where the injector writes
/// the status port.
pub fn rules_read_lifecycle_of(container: &str) -> bool {
    container == crate::istio::names::PROXY_CONTAINER
}

/// Istio's injector names its containers `istio-proxy`, `istio-init` and
/// `istio-validation`; only their environment and lifecycle hooks are read
/// (the interception flags, the proxy's `OUTPUT_CERTS` and status port). An
/// application's environment, often hundreds of variables, is never decoded.
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    /// Decoded for Istio's containers only ([`is_istio_container`]); `None`
    /// for any other container, whatever it sets.
    pub env: Option<Vec<EnvVar>>,
    /// Decoded for Istio's containers only, like `env`.
    pub lifecycle: Option<Lifecycle>,
    pub security_context: Option<SecurityContext>,
    pub restart_policy: Option<String>,
    pub volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum ContainerField {
    Name,
    Command,
    Args,
    Env,
    Lifecycle,
    SecurityContext,
    RestartPolicy,
    VolumeMounts,
    #[serde(other)]
    Other,
}

/// Sets a field once: a repeated key is an error, as in derived structs.
pub(crate) fn once<T, E: de::Error>(
    slot: &mut Option<T>,
    value: T,
    name: &'static str,
) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(name));
    }
    Ok(())
}

/// By hand rather than derived, for `env` and `lifecycle`: the API server
/// writes `name` first, so an application's are skipped unbuilt and
/// uncopied. Only what comes before the name is kept as text until the name
/// says whose it is.
impl<'de> Deserialize<'de> for ContainerView {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ContainerVisitor)
    }
}

struct ContainerVisitor;

/// A field decoded for Istio's containers only ([`is_istio_container`]).
struct IstioOnly<T> {
    name: &'static str,
    value: Option<Option<T>>,
    before_name: Option<Option<Box<RawValue>>>,
}

impl<T: de::DeserializeOwned> IstioOnly<T> {
    fn new(name: &'static str) -> Self {
        IstioOnly {
            name,
            value: None,
            before_name: None,
        }
    }

    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
        container: Option<&str>,
    ) -> Result<(), A::Error> {
        if self.before_name.is_some() {
            return Err(de::Error::duplicate_field(self.name));
        }
        match container {
            Some(c) if is_istio_container(c) => once(&mut self.value, map.next_value()?, self.name),
            Some(_) => once(
                &mut self.value,
                map.next_value::<IgnoredAny>().map(|_| None)?,
                self.name,
            ),
            None => once(&mut self.before_name, map.next_value()?, self.name),
        }
    }

    fn finish<E: de::Error>(self, container: &str) -> Result<Option<T>, E> {
        match self.before_name.flatten() {
            Some(raw) if is_istio_container(container) => {
                crate::strict::from_str(raw.get()).map_err(de::Error::custom)
            }
            _ => Ok(self.value.flatten()),
        }
    }
}

impl<'de> Visitor<'de> for ContainerVisitor {
    type Value = ContainerView;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a container")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContainerView, A::Error> {
        let (mut name, mut command, mut args, mut security_context) = (None, None, None, None);
        let (mut restart_policy, mut volume_mounts) = (None, None);
        let (mut env, mut lifecycle) = (IstioOnly::new("env"), IstioOnly::new("lifecycle"));
        while let Some(field) = map.next_key()? {
            match field {
                ContainerField::Name => once(&mut name, map.next_value::<String>()?, "name")?,
                ContainerField::Command => once(&mut command, map.next_value()?, "command")?,
                ContainerField::Args => once(&mut args, map.next_value()?, "args")?,
                ContainerField::SecurityContext => {
                    once(&mut security_context, map.next_value()?, "securityContext")?
                }
                ContainerField::RestartPolicy => {
                    once(&mut restart_policy, map.next_value()?, "restartPolicy")?
                }
                ContainerField::VolumeMounts => {
                    once(&mut volume_mounts, map.next_value()?, "volumeMounts")?
                }
                ContainerField::Env => env.read(&mut map, name.as_deref())?,
                ContainerField::Lifecycle => lifecycle.read(&mut map, name.as_deref())?,
                ContainerField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok(ContainerView {
            env: env.finish(&name)?,
            lifecycle: lifecycle.finish(&name)?,
            name,
            command: command.flatten(),
            args: args.flatten(),
            security_context: security_context.flatten(),
            restart_policy: restart_policy.flatten(),
            volume_mounts: volume_mounts.flatten(),
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
        crate::strict::from_str(self.definition.get())
    }
}

impl TryFrom<Box<RawValue>> for VolumeView {
    type Error = serde_json::Error;

    fn try_from(definition: Box<RawValue>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let Named { name } =
            crate::strict::from_str(crate::subject::object_text(definition.get())?)?;
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

    /// Written as text: `json!` sorts keys, which puts `env` before `name`.
    fn containers(text: &str) -> Result<Vec<ContainerView>, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn the_environment_is_read_for_istio_containers_wherever_the_name_comes() {
        let name_first = containers(
            r#"[{"name": "app", "env": [{"name": "A", "value": "1"}]},
                {"name": "istio-proxy", "env": [{"name": "OUTPUT_CERTS", "value": "/c"}]}]"#,
        )
        .unwrap();
        let env_first = containers(
            r#"[{"env": [{"name": "A", "value": "1"}], "name": "app"},
                {"env": [{"name": "OUTPUT_CERTS", "value": "/c"}], "name": "istio-proxy"}]"#,
        )
        .unwrap();
        for read in [name_first, env_first] {
            assert_eq!(read[0].env, None);
            assert_eq!(read[1].env.as_deref().unwrap()[0].name, "OUTPUT_CERTS");
        }
        // An application's env is skipped whatever it holds, once named.
        assert!(containers(r#"[{"name": "app", "env": 7}]"#).is_ok());
        for twice in [
            r#"[{"env": [], "name": "istio-proxy", "env": []}]"#,
            r#"[{"name": "app", "env": [], "env": []}]"#,
            r#"[{"name": "app", "name": "istio-proxy"}]"#,
        ] {
            let error = containers(twice).unwrap_err().to_string();
            assert!(error.contains("duplicate field"), "{twice}: {error}");
        }
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
