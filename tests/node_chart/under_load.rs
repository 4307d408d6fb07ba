//! The chart's replicas under a steady apply loop (node/load.rs): a rollout
//! restart, a SIGKILLed leader, a leader lost for good. Every failed apply
//! is counted; none may fail but the connections a killed process's address
//! refuses (see `split_refused`). Part of tests/node_chart.rs.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::node::load::{Applied, ApplyLoop};
use super::node::{figure, Node, NAMESPACE, RELEASE};
use super::{secs, TEST};

/// The Deployment the apply loop applies: compliant, so every failure is
/// meshgate unreachable, not a denial.
fn web_deployment() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "annotations": {}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "serviceAccountName": "web",
                    "containers": [{"name": "web", "image": "localhost/busybox:local"}]
                }
            }
        }
    })
}

const APPLY_PERIOD: Duration = Duration::from_millis(200);

fn start_load(node: &Node) -> ApplyLoop {
    ApplyLoop::start(
        node.kubeconfig(),
        web_deployment(),
        APPLY_PERIOD,
        Duration::from_secs(150),
    )
}

fn report_load(what: &str, applied: &Applied) {
    figure(TEST, &format!("{what}: applies"), applied.applies);
    figure(
        TEST,
        &format!("{what}: failed applies"),
        applied.failures.len(),
    );
    for (at, error) in &applied.failures {
        eprintln!("{what}: failed apply at {:.1}s: {error}", at.as_secs_f64());
    }
}

/// The failures a SIGKILL may cause, and the rest. Between the kill and the
/// kubelet's restart nothing listens on the killed pod's address while it is
/// still a ready endpoint of the Service; a connection the API server dials
/// there is refused, and its webhook client does not retry a refused POST,
/// so with `failurePolicy: Fail` that apply is refused (docs: operations/
/// outages.md, "When one replica dies"). Only such refusals, naming that
/// address, inside `window`, are the kill's.
fn split_refused(
    applied: &Applied,
    pod_ip: &str,
    window: Range<Duration>,
) -> (Vec<String>, Vec<String>) {
    let refused = format!("dial tcp {pod_ip}:8443: connect: connection refused");
    let (kill, other): (Vec<_>, Vec<_>) = applied
        .failures
        .iter()
        .partition(|(at, error)| window.contains(at) && error.contains(&refused));
    let show = |failures: Vec<&(Duration, String)>| {
        failures
            .into_iter()
            .map(|(at, error)| format!("{:.1}s: {error}", at.as_secs_f64()))
            .collect()
    };
    (show(kill), show(other))
}

/// From one apply before the kill (sent just before it, it may reach the
/// API server's webhook call just after) to now.
fn kill_window(load: &ApplyLoop, killed: Instant) -> Range<Duration> {
    let killed = load.since_start(killed);
    killed.saturating_sub(APPLY_PERIOD)..load.since_start(Instant::now())
}

/// Asserts that every failed apply is the kill's (see [`split_refused`]),
/// and that there are no more than a short burst of them.
fn assert_only_refused_by_the_killed(
    what: &str,
    applied: &Applied,
    pod_ip: &str,
    window: Range<Duration>,
) {
    let (refused, other) = split_refused(applied, pod_ip, window.clone());
    figure(
        TEST,
        &format!("{what}: applies refused by the killed address"),
        refused.len(),
    );
    assert_eq!(other, Vec::<String>::new(), "applies failed after {what}");
    // Two seconds of applies: the kubelet notices a death within one.
    let seconds = (window.end - window.start).as_secs_f64();
    assert!(
        refused.len() <= 10,
        "{} applies refused by {pod_ip} within {seconds:.1} s: {refused:?}",
        refused.len()
    );
}

/// `kubectl rollout restart` with applies every 200 ms: the old pods drain
/// (unready first, then stop), the new ones take over; no apply fails. The
/// Lease moves to a new pod.
pub fn rollout_restart(node: &Node) {
    let load = start_load(node);
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let deployment = format!("deployment/{RELEASE}");
    node.kubectl(&["rollout", "restart", &deployment, "-n", NAMESPACE], "");
    node.kubectl(
        &[
            "rollout",
            "status",
            &deployment,
            "-n",
            NAMESPACE,
            "--timeout=150s",
        ],
        "",
    );
    figure(
        TEST,
        "rollout restart: rollout status done (s)",
        secs(started.elapsed()),
    );
    // The old pods keep serving through their drain delay (10 s).
    std::thread::sleep(Duration::from_secs(15));
    let applied = load.stop();
    report_load("rollout restart", &applied);
    assert!(applied.applies >= 80, "the loop ran: {applied:?}");
    assert_eq!(
        applied.failures,
        Vec::new(),
        "applies failed during the rollout"
    );
    node.wait_for("a new pod holds the Lease", Duration::from_secs(60), || {
        let ready = node.ready_pods();
        node.lease()
            .is_some_and(|(holder, _)| ready.iter().any(|p| holder.starts_with(&format!("{p}-"))))
    });
}

/// SIGKILL of the leader's process under the same load. The kubelet restarts
/// the container at once; the new process has the same identity (pod name,
/// PID 1), so it renews the Lease itself instead of waiting for it to run
/// out. No apply fails but those the API server sent to the dead process's
/// address before it listened again (see [`split_refused`]).
pub fn sigkill_the_leader(node: &Node) {
    let (holder, renewed) = node.lease().expect("a Lease holder");
    let leader = node
        .ready_pods()
        .into_iter()
        .find(|p| holder.starts_with(&format!("{p}-")))
        .expect("the leader is a ready pod");
    let pid = node.meshgate_pid(&leader).expect("the leader's process");
    let ip = node.pod_field(&leader, "{.status.podIP}");
    let load = start_load(node);
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -KILL {pid}");
    node.wait_for(
        "the killed replica restarted and Ready",
        Duration::from_secs(90),
        || node.meshgate_pid(&leader).is_some_and(|p| p != pid) && node.ready_pods().len() == 2,
    );
    let window = kill_window(&load, killed);
    figure(
        TEST,
        "SIGKILL: killed replica Ready again (s)",
        secs(killed.elapsed()),
    );
    node.wait_for(
        "the Lease renewed after the kill",
        Duration::from_secs(60),
        || node.lease().is_some_and(|(_, r)| r != renewed),
    );
    let renewed_after = secs(killed.elapsed());
    let (new_holder, _) = node.lease().expect("a Lease holder");
    figure(
        TEST,
        "SIGKILL: Lease holder after the kill",
        format!("{new_holder} (before: {holder}; renewed {renewed_after} s after the kill)"),
    );
    std::thread::sleep(Duration::from_secs(10));
    let applied = load.stop();
    report_load("SIGKILL of the leader", &applied);
    assert!(applied.applies >= 50, "the loop ran: {applied:?}");
    assert_only_refused_by_the_killed("the SIGKILL", &applied, &ip, window);
}

/// The leader SIGKILLed and its pod force-deleted (a replica gone for good,
/// as on a lost node): it never releases the Lease, so another replica (the
/// survivor, or the replacement pod if it is faster) takes it once it runs
/// out (15 s), under the same load.
pub fn leader_lost(node: &Node) {
    let (holder, _) = node.lease().expect("a Lease holder");
    let ready = node.ready_pods();
    let leader = ready
        .iter()
        .find(|p| holder.starts_with(&format!("{p}-")))
        .expect("the leader is a ready pod")
        .clone();
    let survivor = ready
        .into_iter()
        .find(|p| *p != leader)
        .expect("a second replica");
    let pid = node.meshgate_pid(&leader).expect("the leader's process");
    let ip = node.pod_field(&leader, "{.status.podIP}");
    let load = start_load(node);
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -KILL {pid}");
    let pod = leader.as_str();
    node.kubectl(
        &[
            "delete",
            "pod",
            pod,
            "-n",
            NAMESPACE,
            "--grace-period=0",
            "--force",
        ],
        "",
    );
    node.wait_for(
        "another replica holds the Lease",
        Duration::from_secs(90),
        || {
            let ready = node.ready_pods();
            node.lease().is_some_and(|(h, _)| {
                !h.starts_with(&format!("{leader}-"))
                    && ready.iter().any(|p| h.starts_with(&format!("{p}-")))
            })
        },
    );
    // The deleted pod's address leaves the Service well before this.
    let window = kill_window(&load, killed);
    let (new_holder, _) = node.lease().expect("a Lease holder");
    let who = if new_holder.starts_with(&format!("{survivor}-")) {
        "the surviving replica"
    } else {
        "the replacement pod"
    };
    figure(
        TEST,
        "leader lost: Lease taken over after (s)",
        format!("{} by {who}", secs(killed.elapsed())),
    );
    node.wait_for("2 pods Ready again", Duration::from_secs(90), || {
        node.ready_pods().len() == 2
    });
    std::thread::sleep(Duration::from_secs(5));
    let applied = load.stop();
    report_load("leader lost", &applied);
    assert!(applied.applies >= 50, "the loop ran: {applied:?}");
    assert_only_refused_by_the_killed("the leader was lost", &applied, &ip, window);
}
