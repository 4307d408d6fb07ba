//! The replicas as the cluster and the kernel see them: who holds the
//! report writer's Lease, and the host PID of a pod's meshgate process.

use super::{Node, NAMESPACE};

impl Node {
    /// The holder of the report writer's Lease and its renew time.
    pub fn lease(&self) -> Option<(String, String)> {
        let out = self.kubectl_output(
            &[
                "get",
                "lease",
                "meshgate-reports",
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.spec.holderIdentity} {.spec.renewTime}",
            ],
            "",
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (holder, renewed) = text.trim().split_once(' ')?;
        (out.status.success() && !holder.is_empty())
            .then(|| (holder.to_owned(), renewed.to_owned()))
    }

    /// The host PID of the meshgate process of `pod`: the one whose cgroup
    /// path names the pod's UID (cgroupfs driver: `.../pod<uid>/<container>`).
    pub fn meshgate_pid(&self, pod: &str) -> Option<u32> {
        let uid = self.pod_field(pod, "{.metadata.uid}");
        let uid = uid.as_str();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
                (cmdline.starts_with(b"/usr/local/bin/meshgate\0serve") && cgroup.contains(uid))
                    .then_some(pid)
            })
    }

    /// One field of a meshgate pod (a kubectl JSONPath), trimmed.
    pub fn pod_field(&self, pod: &str, jsonpath: &str) -> String {
        let template = format!("jsonpath={jsonpath}");
        let args = ["get", "pod", pod, "-n", NAMESPACE, "-o", &template];
        self.kubectl(&args, "").trim().to_owned()
    }
}
