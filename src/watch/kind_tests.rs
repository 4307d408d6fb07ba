use std::sync::{Arc, Mutex};

use super::*;

/// Writes what it sees as one line each, into a log shared by the sinks.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    /// Gone after this many events.
    lives: usize,
}

impl Sink for Recorder {
    fn take<'a>(&'a mut self, seen: Seen<'a>) -> BoxFuture<'a, bool> {
        let line = match seen {
            Seen::Relisting => "relisting".to_owned(),
            Seen::Listing(o) => format!("listing {}", o.metadata.name.as_deref().unwrap_or("")),
            Seen::Listed => "listed".to_owned(),
            Seen::Applied(o) => {
                // Trimmed and typed on arrival, before any sink sees it.
                assert!(o.metadata.managed_fields.is_none());
                assert!(o.data.get("status").is_none());
                assert_eq!(o.types.as_ref().unwrap().kind, "Pod");
                format!("applied {}", o.metadata.name.as_deref().unwrap_or(""))
            }
            Seen::Deleted(o) => format!("deleted {}", o.metadata.name.as_deref().unwrap_or("")),
            Seen::Missing => "missing".to_owned(),
            Seen::Lost => "lost".to_owned(),
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("{}: {line}", self.name));
        self.lives = self.lives.saturating_sub(1);
        let alive = self.lives > 0;
        Box::pin(async move { alive })
    }
}

fn pod(name: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "managedFields": [{"manager": "k"}]},
        "spec": {"containers": [{"name": "app", "image": "a"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn arrival() -> Arrival {
    Arrival {
        kind: Kind::Pod,
        resource: Kind::Pod.api_resource("v1"),
    }
}

fn sinks(log: &Arc<Mutex<Vec<String>>>, lives: [usize; 2]) -> Vec<Box<dyn Sink>> {
    vec![
        Box::new(Recorder {
            name: "posture",
            log: log.clone(),
            lives: lives[0],
        }),
        Box::new(Recorder {
            name: "background",
            log: log.clone(),
            lives: lives[1],
        }),
    ]
}

#[tokio::test]
async fn every_sink_sees_every_event_in_order_and_a_loss_relists() {
    let log = Arc::default();
    let mut sinks = sinks(&log, [usize::MAX, usize::MAX]);
    let counters = WatchCounters::default();
    let first = vec![
        Ok(Event::Init),
        Ok(Event::InitApply(pod("a"))),
        Ok(Event::InitDone),
        // The API server goes away: the rest of this stream is dropped.
        Err(watcher::Error::NoResourceVersion),
        Ok(Event::Apply(pod("never-seen"))),
    ];
    let second = vec![
        Err(watcher::Error::NoResourceVersion),
        Ok(Event::Init),
        Ok(Event::InitApply(pod("b"))),
        Ok(Event::InitDone),
        Ok(Event::Apply(pod("c"))),
        Ok(Event::Delete(pod("c"))),
    ];
    let mut streams = vec![futures::stream::iter(second), futures::stream::iter(first)];
    let link = WatchLink::new("pods", counters.clone(), MESSAGES);
    feed(
        || streams.pop().expect("connected twice at most"),
        arrival(),
        link,
        &mut sinks,
    )
    .await;
    assert!(streams.is_empty(), "a new watcher after the loss");
    let expected: Vec<String> = [
        "relisting",
        "listing a",
        "listed",
        "lost",
        "relisting",
        "listing b",
        "listed",
        "applied c",
        "deleted c",
    ]
    .iter()
    .flat_map(|line| [format!("posture: {line}"), format!("background: {line}")])
    .collect();
    assert_eq!(*log.lock().unwrap(), expected);
    assert_eq!((counters.errors.get(), counters.restarts.get()), (2, 1));
}

#[tokio::test]
async fn a_gone_sink_is_dropped_and_the_others_still_fed() {
    let log = Arc::default();
    let mut sinks = sinks(&log, [usize::MAX, 1]);
    let events = vec![
        Ok(Event::Init),
        Ok(Event::InitDone),
        Ok(Event::Apply(pod("a"))),
    ];
    let mut streams = vec![futures::stream::iter(events)];
    let link = WatchLink::new("pods", WatchCounters::default(), MESSAGES);
    feed(|| streams.pop().unwrap(), arrival(), link, &mut sinks).await;
    assert_eq!(sinks.len(), 1);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "posture: relisting",
            "background: relisting",
            "posture: listed",
            "posture: applied a"
        ]
    );
}
