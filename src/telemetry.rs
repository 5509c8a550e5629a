//! Logging setup: JSON lines in production, readable text for people at a terminal.
//!
//! The JSON lines are written by [`JsonLines`], not by tracing-subscriber's JSON format:
//! `log` records (pingora logs through the `log` crate) reach tracing with `log.file`,
//! `log.module_path`, `log.line` and `log.target` fields, and that format prints them all,
//! so every pingora line carried an absolute path into the build machine's cargo registry.
//! Here a `log` record's target is its own (`pingora_core::server`), and its `log.*`
//! fields are dropped, as they are for tracing's own events.

use std::fmt;
use std::io::IsTerminal;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber. The level comes from `RUST_LOG` (default `info`); `log`
/// records (pingora's) are forwarded to it.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    if let Err(error) = result {
        eprintln!("logging was already initialised: {error}");
    }
}

/// One JSON object per event: `timestamp`, `level`, `target`, then the event's fields
/// (`message` first), without the `log.*` fields of forwarded `log` records.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields::default();
        event.record(&mut fields);

        // Written key by key, in this order (a `serde_json::Map` would sort the keys).
        let mut line = String::with_capacity(256);
        let mut put = |key: &str, value: &Value| -> fmt::Result {
            line.push(if line.is_empty() { '{' } else { ',' });
            line.push_str(&serde_json::to_string(key).map_err(|_| fmt::Error)?);
            line.push(':');
            line.push_str(&serde_json::to_string(value).map_err(|_| fmt::Error)?);
            Ok(())
        };
        put("timestamp", &Value::from(timestamp))?;
        put("level", &Value::from(meta.level().as_str()))?;
        put("target", &Value::from(meta.target()))?;
        if let Some(message) = &fields.message {
            put("message", message)?;
        }
        let reserved = ["timestamp", "level", "target", "message"];
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &fields.values {
            // A field named like a reserved key, or twice, keeps its first value.
            if reserved.contains(&name.as_str()) || seen.contains(&name.as_str()) {
                continue;
            }
            seen.push(name);
            put(name, value)?;
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// The fields of one event, in the order they were recorded.
#[derive(Default)]
struct JsonFields {
    message: Option<Value>,
    values: Vec<(String, Value)>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        if name == "message" {
            self.message = Some(value);
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.values.push((name.to_string(), value));
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a buffer the test reads afterwards.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(emit: impl FnOnce()) -> (Vec<String>, Vec<serde_json::Value>) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let raw: Vec<String> = String::from_utf8(bytes)
            .expect("UTF-8")
            .lines()
            .map(String::from)
            .collect();
        let parsed = raw
            .iter()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        (raw, parsed)
    }

    #[test]
    fn json_lines_carry_message_and_fields_but_no_source_paths() {
        let (raw, lines) = lines_of(|| {
            // What tracing-log makes of a `log` record from pingora.
            tracing::info!(
                log.target = "pingora_core::server",
                log.module_path = "pingora_core::server",
                log.file = "/root/.cargo/registry/src/index/pingora-core-0.9.1/src/server/mod.rs",
                log.line = 254,
                "SIGTERM received, gracefully exiting"
            );
            tracing::error!(msvc = "shop/api", attempts = 3, "reconcile failed");
        });
        assert_eq!(lines.len(), 2);
        let text = serde_json::to_string(&lines).expect("JSON");
        // A person reads the time, level, target and message first.
        assert!(raw[1].starts_with(r#"{"timestamp":"#), "{}", raw[1]);
        let order: Vec<usize> = ["\"level\"", "\"target\"", "\"message\"", "\"msvc\""]
            .iter()
            .map(|k| raw[1].find(k).expect("the key"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", raw[1]);
        assert!(
            !text.contains("/root/") && !text.contains(".cargo") && !text.contains("log."),
            "{text}"
        );
        assert_eq!(lines[0]["message"], "SIGTERM received, gracefully exiting");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[1]["msvc"], "shop/api");
        assert_eq!(lines[1]["attempts"], 3);
        assert_eq!(lines[1]["level"], "ERROR");
        assert!(lines[1]["timestamp"].as_str().is_some_and(|t| t.len() > 10));
        assert!(
            lines[1]["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("routemeter"))
        );
    }
}
