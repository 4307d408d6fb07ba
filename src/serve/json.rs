//! The JSON log line, written as tracing-subscriber's JSON formatter writes
//! it (flattened event, target, current span, no span list) but cheaper:
//! every review writes one, and it was most of the fixed cost per review.
//!
//! - The span is written from its stored fields as they are. The stock
//!   formatter parses them back into a map for every line
//!   (tokio-rs/tracing#391); the stored text (`JsonFields`) is already the
//!   JSON object, keys sorted, that the parse wrote back out.
//! - The line is serialised into bytes and handed over once; the stock
//!   formatter passes every piece through an `io::Write` adaptor that checks
//!   it as UTF-8 (about 80 pieces a line).
//!
//! - Span fields are stored by [`SpanFields`], which writes the object
//!   `JsonFields` would without its map of `serde_json::Value`s: every
//!   review opens a span.
//!
//! Events from the `log` crate keep the stock formatter (it reads their
//! level and target from the record's fields).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::ser::{SerializeMap, Serializer as _};
use serde_json::value::RawValue;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

pub(super) struct JsonLine(Format<Json>);

impl JsonLine {
    pub(super) fn new() -> JsonLine {
        JsonLine(
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_span_list(false),
        )
    }
}

impl<S> FormatEvent<S, SpanFields> for JsonLine
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        if meta.fields().field("log.target").is_some() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut timestamp = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        // A decision line is ~600 bytes: room for it from the start.
        let mut line = Vec::with_capacity(1024);
        let mut serializer = serde_json::Serializer::new(&mut line);
        let mut map = serializer.serialize_map(None).map_err(fmt_error)?;
        map.serialize_entry("timestamp", &timestamp)
            .map_err(fmt_error)?;
        map.serialize_entry("level", meta.level().as_str())
            .map_err(fmt_error)?;
        let mut fields = Fields { map, state: Ok(()) };
        event.record(&mut fields);
        let Fields { mut map, state } = fields;
        state.map_err(fmt_error)?;
        map.serialize_entry("target", meta.target())
            .map_err(fmt_error)?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        match span {
            // The map (left open) is closed by hand, after the span's object.
            Some(span) => write_span(&mut line, &span)?,
            None => map.end().map_err(fmt_error)?,
        }
        line.push(b'\n');
        writer.write_str(std::str::from_utf8(&line).map_err(fmt_error)?)
    }
}

/// `,"span":{<stored fields>,"name":…}}`: the span's object and the
/// line's closing brace.
fn write_span<S>(line: &mut Vec<u8>, span: &SpanRef<'_, S>) -> std::fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    line.extend_from_slice(b",\"span\":");
    let extensions = span.extensions();
    let stored = extensions
        .get::<FormattedFields<SpanFields>>()
        .map_or("", |f| f.fields.as_str());
    // `{"a":1}` → `{"a":1,"name":…}`; `{}` → `{"name":…}`.
    match stored.strip_suffix('}').filter(|open| open.len() > 1) {
        Some(open) => {
            line.extend_from_slice(open.as_bytes());
            line.push(b',');
        }
        None => line.push(b'{'),
    }
    line.extend_from_slice(b"\"name\":");
    serde_json::to_writer(&mut *line, span.name()).map_err(fmt_error)?;
    line.extend_from_slice(b"}}");
    Ok(())
}

/// Span fields as the JSON object `JsonFields` stores: keys sorted, the
/// last value of a key kept, `Debug` and `Display` values as strings, a
/// `r#` prefix dropped and `log.` fields skipped in `Debug` values. Each value is written once,
/// straight into one buffer; `JsonFields` builds a map of
/// `serde_json::Value`s and writes it through an adaptor that checks every
/// piece as UTF-8, most of the cost of opening a review's span.
#[derive(Debug, Default)]
pub(super) struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut values = Values::default();
        fields.record(&mut values);
        writer.write_str(&values.object(&BTreeMap::new())?)
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        // A field recorded after the span opened (rare): the stored object
        // is read back and the new values merged in, as `JsonFields` does.
        let stored: BTreeMap<String, Box<RawValue>> = if current.fields.is_empty() {
            BTreeMap::new()
        } else {
            serde_json::from_str(&current.fields).map_err(fmt_error)?
        };
        let mut values = Values::default();
        fields.record(&mut values);
        current.fields = values.object(&stored)?;
        Ok(())
    }
}

/// Recorded field values, each already JSON, in one buffer.
#[derive(Default)]
struct Values {
    text: Vec<u8>,
    /// Each field's name and where its value is in `text`.
    entries: Vec<(&'static str, Range<usize>)>,
}

impl Values {
    fn push<T: serde::Serialize + ?Sized>(&mut self, name: &'static str, value: &T) {
        let start = self.text.len();
        match serde_json::to_writer(&mut self.text, value) {
            Ok(()) => self.entries.push((name, start..self.text.len())),
            Err(_) => self.text.truncate(start),
        }
    }

    /// The object of `stored` and the recorded values, the recorded ones
    /// winning.
    fn object(&self, stored: &BTreeMap<String, Box<RawValue>>) -> Result<String, std::fmt::Error> {
        let text = std::str::from_utf8(&self.text).map_err(fmt_error)?;
        let mut all: Vec<(&str, &str)> =
            stored.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
        all.extend(self.entries.iter().map(|(k, r)| (*k, &text[r.clone()])));
        // Stable: of equal keys, the one recorded last stays last.
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(text.len() + 16 * all.len() + 2);
        out.push(b'{');
        for (i, &(key, value)) in all.iter().enumerate() {
            if all.get(i + 1).is_some_and(|next| next.0 == key) {
                continue;
            }
            if out.len() > 1 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, key).map_err(fmt_error)?;
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'}');
        String::from_utf8(out).map_err(fmt_error)
    }
}

impl Visit for Values {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // As `JsonVisitor`: only here are `log.` fields skipped and `r#`
        // dropped.
        let name = field.name();
        if !name.starts_with("log.") {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.push(name, &format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field.name(), &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.push(field.name(), value);
    }
}

fn fmt_error<E>(_: E) -> std::fmt::Error {
    std::fmt::Error
}

/// The event's fields as map entries, as `tracing_serde::SerdeMapVisitor`
/// writes them (the stock formatter's visitor): values by type, the rest
/// through `Debug` (`Display` fields included), errors and wide integers by
/// `Visit`'s defaults.
struct Fields<M> {
    map: M,
    state: Result<(), serde_json::Error>,
}

impl<M: SerializeMap<Error = serde_json::Error>> Fields<M> {
    fn entry<T: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if self.state.is_ok() {
            self.state = self.map.serialize_entry(field.name(), value);
        }
    }
}

impl<M: SerializeMap<Error = serde_json::Error>> Visit for Fields<M> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }
}
