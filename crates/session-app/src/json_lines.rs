//! JSON log lines, the same lines `tracing-subscriber`'s JSON formatter
//! writes (`flatten_event`, the current span and the span list), at a
//! fraction of its cost per line.
//!
//! Its formatter keeps each span's fields as JSON object text
//! ([`FormattedFields`]) and, for every line, parses that text back into a
//! `serde_json::Value` once for the current span and once more for each span
//! of the list, only to serialise it again; recording a field on a span
//! (the request's status) parses and rewrites the whole object too. With a
//! line per request that was most of what logging cost a request. Here a
//! span's fields are written into its object text as they are visited (in
//! [`JsonFields`]' encoding, without its map of `serde_json::Value`s), the
//! text is copied into each line as it is, and a recorded field is
//! appended to it unless the object may already hold its name.
//!
//! Keys, values and the line's layout are the formatter's: `timestamp`,
//! `level`, the event's fields (through `tracing-serde`, as the formatter
//! writes them), `target`, `span` (the span's fields, then `name`) and
//! `spans` (root first). Only the order of a span's own fields differs: as
//! given and recorded, where the formatter sorts them.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use serde::ser::{SerializeMap as _, Serializer as _};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// Formats events as JSON lines; see the module documentation.
pub(crate) struct JsonLines;

/// Formats span fields as the JSON object [`JsonFields`] writes, and
/// records fields added later by appending them to the stored object
/// instead of parsing and rewriting it.
#[derive(Default)]
pub(crate) struct AppendingJsonFields;

thread_local! {
    /// The line being built, reused so a line costs no allocation.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<S> FormatEvent<S, AppendingJsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, AppendingJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|line| {
            // A line formatted while another is (a `Debug` impl that logs)
            // takes a buffer of its own.
            let mut own = Vec::new();
            let mut borrowed = line.try_borrow_mut();
            let buffer = match borrowed.as_deref_mut() {
                Ok(buffer) => buffer,
                Err(_) => &mut own,
            };
            buffer.clear();
            write_line(ctx, event, buffer)?;
            let text = std::str::from_utf8(buffer).map_err(|_| fmt::Error)?;
            writer.write_str(text)?;
            // A long line once does not keep its buffer for the thread's life.
            if buffer.capacity() > 16 * 1024 {
                *buffer = Vec::new();
            }
            Ok(())
        })
    }
}

fn write_line<S>(
    ctx: &FmtContext<'_, S, AppendingJsonFields>,
    event: &Event<'_>,
    buffer: &mut Vec<u8>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    let mut timestamp = String::with_capacity(32);
    SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
    let current = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());

    let mut serializer = serde_json::Serializer::new(&mut *buffer);
    let mut map = serializer.serialize_map(None).map_err(|_| fmt::Error)?;
    map.serialize_entry("timestamp", &timestamp)
        .map_err(|_| fmt::Error)?;
    map.serialize_entry("level", meta.level().as_str())
        .map_err(|_| fmt::Error)?;
    let mut visitor = tracing_serde::SerdeMapVisitor::new(map);
    event.record(&mut visitor);
    let mut map = visitor.take_serializer().map_err(|_| fmt::Error)?;
    // The map is left open (not `end`ed): the spans are copied in as text.
    map.serialize_entry("target", meta.target())
        .map_err(|_| fmt::Error)?;
    if let Some(current) = current {
        buffer.extend_from_slice(b",\"span\":");
        span_object(&current, buffer)?;
        // The list is the scope of the span entered, even when the event
        // names another parent, as the formatter writes it.
        buffer.extend_from_slice(b",\"spans\":[");
        let entered = ctx.lookup_current();
        for (index, span) in entered
            .iter()
            .flat_map(|span| span.scope().from_root())
            .enumerate()
        {
            if index > 0 {
                buffer.push(b',');
            }
            span_object(&span, buffer)?;
        }
        buffer.push(b']');
    }
    buffer.extend_from_slice(b"}\n");
    Ok(())
}

/// `{<the span's fields>,"name":"<its name>"}`, the fields copied from the
/// object text stored when the span was created.
fn span_object<S>(span: &SpanRef<'_, S>, buffer: &mut Vec<u8>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    let fields = extensions
        .get::<FormattedFields<AppendingJsonFields>>()
        .map_or("", |fields| fields.fields.as_str());
    // The stored text is a JSON object, `{}` when the span has no field.
    let inner = fields
        .strip_prefix('{')
        .and_then(|fields| fields.strip_suffix('}'))
        .unwrap_or("");
    buffer.push(b'{');
    buffer.extend_from_slice(inner.as_bytes());
    if !inner.is_empty() {
        buffer.push(b',');
    }
    buffer.extend_from_slice(b"\"name\":");
    serde_json::to_writer(&mut *buffer, span.name()).map_err(|_| fmt::Error)?;
    buffer.push(b'}');
    Ok(())
}

impl<'writer> FormatFields<'writer> for AppendingJsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut object = FieldsObject::default();
        fields.record(&mut object);
        writer.write_str(&object.finish()?)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let Some(inner) = current
            .fields
            .strip_suffix('}')
            .filter(|inner| inner.len() > 1)
        else {
            // No field yet: the new ones are the whole object.
            current.fields.clear();
            return self.format_fields(current.as_writer(), fields);
        };
        let mut names = NamesPresent {
            object: &current.fields,
            any: false,
        };
        fields.record(&mut names);
        if names.any {
            // A name already there: merge the way JsonFields does, by
            // parsing the object and writing it again.
            return merge(&mut current.fields, fields);
        }
        let mut object = FieldsObject::default();
        fields.record(&mut object);
        let added = object.finish()?;
        let Some(added) = added
            .strip_prefix('{')
            .and_then(|added| added.strip_suffix('}'))
            .filter(|added| !added.is_empty())
        else {
            return Ok(());
        };
        let keep = inner.len();
        current.fields.truncate(keep);
        current.fields.push(',');
        current.fields.push_str(added);
        current.fields.push('}');
        Ok(())
    }
}

/// A span's fields as a JSON object, written as they are visited: the keys
/// and values [`JsonFields`] writes (which first collects them into a map
/// of `serde_json::Value`s, an allocation per field), in the order given
/// rather than sorted.
#[derive(Default)]
struct FieldsObject {
    text: Vec<u8>,
    failed: bool,
}

impl FieldsObject {
    fn entry(&mut self, name: &str, value: impl serde::Serialize) {
        self.text
            .push(if self.text.is_empty() { b'{' } else { b',' });
        let written = serde_json::to_writer(&mut self.text, name).and_then(|()| {
            self.text.push(b':');
            serde_json::to_writer(&mut self.text, &value)
        });
        self.failed |= written.is_err();
    }

    fn finish(mut self) -> Result<String, fmt::Error> {
        if self.text.is_empty() {
            self.text.push(b'{');
        }
        self.text.push(b'}');
        if self.failed {
            return Err(fmt::Error);
        }
        String::from_utf8(self.text).map_err(|_| fmt::Error)
    }
}

/// `Debug` output as a string value, written through serde's `collect_str`
/// (escaped as it is formatted, no intermediate `String`).
struct DebugText<'a>(&'a dyn fmt::Debug);

impl serde::Serialize for DebugText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:?}", self.0))
    }
}

impl Visit for FieldsObject {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // As `serde_json::Value::from`: a non-finite number is `null`.
        self.entry(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field.name(), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field.name(), value);
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // As JsonVisitor: a raw identifier's name loses its `r#` here only.
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.entry(name, DebugText(value));
    }
}

/// Whether any recorded field's quoted name appears in `object` (anywhere:
/// a false positive only takes the slower, exact path).
struct NamesPresent<'a> {
    object: &'a str,
    any: bool,
}

impl Visit for NamesPresent<'_> {
    fn record_debug(&mut self, field: &Field, _value: &dyn fmt::Debug) {
        let mut quoted = String::with_capacity(field.name().len() + 2);
        let _ = write!(quoted, "\"{}\"", field.name());
        self.any |= self.object.contains(&quoted);
    }
}

/// Records `fields` into the object text `fields_text`, a name already
/// there taking its new value: what [`JsonFields`] does for every record.
fn merge(fields_text: &mut String, fields: &Record<'_>) -> fmt::Result {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(fields_text).map_err(|_| fmt::Error)?;
    let mut added = String::new();
    JsonFields::default().format_fields(Writer::new(&mut added), fields)?;
    let added: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&added).map_err(|_| fmt::Error)?;
    object.extend(added);
    *fields_text = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Lines written, shared with the test.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Spans nested two deep, fields recorded later (new names, and one
    /// recorded twice), an event with a parent given explicitly, events
    /// with no span, with strings to escape and every kind of value.
    fn log_a_request() {
        tracing::info!(answer = 42, "before any span");
        let request = tracing::info_span!(
            "request",
            otel.status_code = tracing::field::Empty,
            http.route = "/v1/sessions/resolve",
            request_id = "0f1e",
            status = tracing::field::Empty,
            r#type = ?"a \"debug\" value",
            ratio = f64::NAN,
            big = u128::MAX,
            flag = false,
            signed = -7_i64,
            bytes = &b"ab"[..],
        );
        let _request = request.enter();
        let resolve = tracing::info_span!("session.resolve", session.id = tracing::field::Empty);
        {
            let _resolve = resolve.enter();
            resolve.record("session.id", "019a-\"quoted\"\n");
            tracing::warn!(ok = true, ratio = 0.5, signed = -3_i64, text = %"a\tb", "inside");
        }
        request.record("status", 200_u64);
        request.record("status", 401_u64);
        request.record("otel.status_code", "error");
        let empty = tracing::info_span!("empty");
        tracing::info!(parent: &empty, "explicit parent");
        tracing::info!(latency_us = 17_u64, "request finished");
    }

    /// The lines written, as text and parsed without their timestamps.
    fn lines(
        subscriber: impl Subscriber + Send + Sync + 'static,
        captured: &Captured,
    ) -> (String, Vec<serde_json::Value>) {
        tracing::subscriber::with_default(subscriber, log_a_request);
        let bytes = captured
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("UTF-8");
        let parsed = text
            .lines()
            .map(|line| {
                let mut line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                // The one thing allowed to differ.
                line.as_object_mut().expect("an object").remove("timestamp");
                line
            })
            .collect();
        (text, parsed)
    }

    #[test]
    fn lines_are_the_json_formatters_own() {
        let theirs = Captured::default();
        let (_, expected) = lines(
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(theirs.clone()),
            ),
            &theirs,
        );
        let ours = Captured::default();
        let (text, written) = lines(
            tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(AppendingJsonFields)
                    .event_format(JsonLines)
                    .with_writer(ours.clone()),
            ),
            &ours,
        );
        assert_eq!(written.len(), 4, "{written:#?}");
        assert_eq!(written, expected);
        // A name recorded twice is there once in each of the three request
        // objects written after it (a parser would hide a duplicate).
        assert_eq!(text.matches("\"status\":").count(), 3, "{text}");
        // Spot checks that the comparison covers what the service relies on.
        let finished = &written[3];
        assert_eq!(finished["span"]["request_id"], "0f1e");
        assert_eq!(finished["span"]["status"], 401);
        assert_eq!(finished["span"]["otel.status_code"], "error");
        assert_eq!(finished["spans"][0]["name"], "request");
        assert_eq!(written[1]["span"]["session.id"], "019a-\"quoted\"\n");
        assert_eq!(written[2]["span"]["name"], "empty");
    }
}
