//! Logging for `meshgate serve` and `remove-webhooks`: the filter, the
//! format, and where lines go.
//!
//! Lines go to stdout in batches: every review writes one line, and one
//! `write(2)` per line was a fixed cost per review the no-op webhook does
//! not pay. A line is appended to a buffer; a thread writes the buffer out
//! every [`FLUSH_INTERVAL`] (one system call for all the lines of that
//! interval), and [`flush`] writes what is left at exit and on a panic. A
//! buffer past [`MAX_BUFFERED`] (stdout blocked or slower than the lines
//! come) is written by the thread that logs, as an unbatched line would be:
//! memory stays bounded and nothing is dropped.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// How long a line may wait in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// The most the buffer holds before the logging thread writes it itself.
pub const MAX_BUFFERED: usize = 256 << 10;

/// kube-client logs, without context, every failed HTTP request at ERROR
/// (its trace layer, `failed with error ...`: 157 lines in 70 s of an API
/// server outage) and every watch stream the API server cut at WARN (`eof
/// in poll`, one per watch per restart). Each such failure reaches meshgate,
/// which logs it once per outage and counts it, so those lines are off
/// unless `MESHGATE_LOG` asks for them; the client's TLS module (CA bundle
/// reloads) still logs.
pub const DEFAULT_FILTER: &str =
    "info,kube_client::client=error,kube_client::client::builder=off,kube_client::client::tls=info";

/// Installs the global subscriber: `MESHGATE_LOG` (or [`DEFAULT_FILTER`]),
/// `format`, batched stdout.
pub fn init(format: LogFormat) {
    let filter = match tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG") {
        Ok(filter) => filter,
        Err(error) => {
            // Unset is the normal case; a filter that does not parse is a
            // mistake to say out loud, not to hide behind the default.
            if std::env::var_os("MESHGATE_LOG").is_some() {
                eprintln!("meshgate: MESHGATE_LOG is not a valid log filter ({error}): using the default filter");
            }
            tracing_subscriber::EnvFilter::new(DEFAULT_FILTER)
        }
    };
    // Colour codes only on a terminal: in files and log collectors they are
    // noise. NO_COLOR (https://no-color.org) turns them off anyway.
    use std::io::IsTerminal;
    let ansi = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
    use tracing_subscriber::util::SubscriberInitExt;
    subscriber(format, filter, ansi, Batched::stdout()).init();
}

/// The subscriber `init` installs, writing to `writer` (a sink in the
/// benchmark of the handler).
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        // The review span once per line ("span"), not again as a one-entry
        // "spans" list; see `JsonLine` for the rest.
        LogFormat::Json => Box::new(
            builder
                .json()
                .fmt_fields(super::json::SpanFields)
                .event_format(super::json::JsonLine::new())
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Writes what the batched stdout holds (at exit, on a panic).
pub fn flush() {
    if let Some(buffer) = STDOUT.get() {
        let _ = buffer.write_out();
    }
}

static STDOUT: OnceLock<Arc<Buffer>> = OnceLock::new();

#[derive(Default)]
struct Buffer {
    lines: Mutex<Vec<u8>>,
    /// Lines go straight out (no flushing thread).
    direct: AtomicBool,
}

impl Buffer {
    /// Takes the buffered lines and writes them to stdout. The buffer's
    /// lock is not held while writing, so logging threads never wait on
    /// stdout; stdout's is taken first, so batches go out in order.
    fn write_out(&self) -> io::Result<()> {
        self.write_to(&mut io::stdout().lock())
    }

    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let lines = std::mem::take(&mut *self.lines.lock());
        if lines.is_empty() {
            return Ok(());
        }
        out.write_all(&lines)?;
        out.flush()
    }
}

/// A [`MakeWriter`] over the batched stdout.
#[derive(Clone)]
pub struct Batched(Arc<Buffer>);

impl Batched {
    /// The process's batched stdout, its flushing thread started on first
    /// use. Without a thread (it could not be spawned) lines are written
    /// one by one, as before.
    pub fn stdout() -> Batched {
        let buffer = STDOUT.get_or_init(|| {
            let buffer = Arc::new(Buffer::default());
            let flushed = buffer.clone();
            let spawned =
                std::thread::Builder::new()
                    .name("log-flush".into())
                    .spawn(move || loop {
                        std::thread::sleep(FLUSH_INTERVAL);
                        let _ = flushed.write_out();
                    });
            if spawned.is_err() {
                buffer.direct.store(true, Ordering::Relaxed);
                eprintln!("meshgate: cannot start the log thread; writing each line at once");
            }
            buffer
        });
        Batched(buffer.clone())
    }
}

/// One line (tracing writes each event with one `write_all`).
pub struct Line<'a>(&'a Buffer);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let full = {
            let mut lines = self.0.lines.lock();
            lines.extend_from_slice(buf);
            lines.len() > MAX_BUFFERED || self.0.direct.load(Ordering::Relaxed)
        };
        if full {
            self.0.write_out()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_in_the_buffer_and_go_out_together_in_order() {
        let buffer = Buffer::default();
        for line in ["one\n", "two\n"] {
            Line(&buffer).write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(&*buffer.lines.lock(), b"one\ntwo\n");
        let mut out = Vec::new();
        buffer.write_to(&mut out).unwrap();
        assert_eq!(out, b"one\ntwo\n");
        assert!(buffer.lines.lock().is_empty(), "written once");
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Buffer>);
    impl<'a> MakeWriter<'a> for Shared {
        type Writer = Line<'a>;
        fn make_writer(&'a self) -> Line<'a> {
            Line(&self.0)
        }
    }

    impl Shared {
        /// The lines written, each from its `level` on (timestamps differ).
        fn lines(&self) -> Vec<String> {
            let mut out = Vec::new();
            self.0.write_to(&mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let lines = text.lines();
            lines
                .map(|l| l[l.find("\"level\"").unwrap()..].to_owned())
                .collect()
        }
    }

    /// Lines about a span, without one, with an explicit parent, with a
    /// field recorded on the span later, a span without fields.
    fn log_some_lines() {
        let span = tracing::info_span!("review", uid = "u\"1", object = tracing::field::Empty);
        span.in_scope(|| tracing::info!(n = 1, text = "a \\ b", "hello"));
        let error = std::io::Error::other("an \"error\"");
        tracing::error!(
            shown = %"dis\tplay",
            debugged = ?Some("x"),
            yes = true,
            minus = -3i64,
            big = u64::MAX,
            wide = 1u128 << 100,
            error = &error as &dyn std::error::Error,
            "typed fields"
        );
        span.record("object", "ns/é");
        span.in_scope(|| tracing::warn!(rules = "r:enforce", "again"));
        tracing::info!(parent: &span, "explicit");
        tracing::info!(n = 2.5, "outside");
        tracing::info_span!("bare").in_scope(|| tracing::info!("in a bare span"));
        // Every kind of span field, one recorded later, one replaced.
        let typed = tracing::info_span!(
            "typed",
            z = 1u64,
            shown = %"a\"b\n",
            flag = true,
            minus = -2i64,
            ratio = 0.5,
            nan = f64::NAN,
            debugged = ?Some("é"),
            r#type = "raw",
            r#ref = ?1,
            later = tracing::field::Empty,
        );
        typed.record("later", "set");
        typed.record("z", 2u64);
        typed.in_scope(|| tracing::info!("in a typed span"));
    }

    /// `JsonLine` writes what tracing-subscriber's JSON formatter does.
    #[test]
    fn the_json_lines_are_tracing_subscribers_own() {
        let (ours, theirs) = (Shared::default(), Shared::default());
        let filter = tracing_subscriber::EnvFilter::new(DEFAULT_FILTER);
        let subscriber = subscriber(LogFormat::Json, filter, false, ours.clone());
        tracing::subscriber::with_default(subscriber, log_some_lines);
        let reference = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(theirs.clone())
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(reference, log_some_lines);
        let (ours, theirs) = (ours.lines(), theirs.lines());
        assert_eq!(ours.len(), 7);
        assert_eq!(ours, theirs);
    }

    /// The JSON subscriber writes one line per event, with the span.
    #[test]
    fn the_json_subscriber_writes_the_event_and_its_span() {
        let shared = Shared::default();
        let filter = tracing_subscriber::EnvFilter::new(DEFAULT_FILTER);
        let subscriber = subscriber(LogFormat::Json, filter, false, shared.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("review", uid = "u1").in_scope(|| tracing::info!(n = 1, "hello"));
        });
        let mut out = Vec::new();
        shared.0.write_to(&mut out).unwrap();
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["message"], "hello", "{line}");
        assert_eq!(line["n"], 1, "{line}");
        assert_eq!(line["span"]["uid"], "u1", "{line}");
        assert_eq!(line["span"]["name"], "review", "{line}");
    }
}
