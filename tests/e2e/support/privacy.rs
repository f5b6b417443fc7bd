//! Captures every log line (at debug level) and every exported span of the whole suite, and
//! checks them against every personal value tests seeded.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

struct Capture {
    /// Seeded personal values (names, ID numbers, phones, codes).
    sensitive: Vec<String>,
    /// Short secrets (SMS codes), matched only as whole tokens: see [`sensitive_token`].
    tokens: Vec<String>,
    /// Everything logged so far.
    logs: Vec<u8>,
}

static CAPTURE: Mutex<Capture> = Mutex::new(Capture { sensitive: Vec::new(), tokens: Vec::new(), logs: Vec::new() });
static SPANS: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();

/// Records a value that must never appear in logs or spans.
pub fn sensitive(value: &str) {
    CAPTURE.lock().unwrap().sensitive.push(value.to_owned());
}

/// Records a short secret (a 6-digit SMS code) that must never appear in logs or spans.
///
/// Six digits occur by chance all over the captured text (the microseconds of every log
/// timestamp, runs inside ids, span timings), so [`sensitive`] would fail at random. Such a
/// value counts as leaked only where it stands as a token of its own (no letter or digit on
/// either side, as in `code=123456` or `"123456"`), outside the tracing layer's `*_ns` timings.
pub fn sensitive_token(value: &str) {
    CAPTURE.lock().unwrap().tokens.push(value.to_owned());
}

/// Whether `token` occurs in `text` with no letter or digit right before or after it.
fn contains_token(text: &str, token: &str) -> bool {
    text.match_indices(token).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + token.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.lock().unwrap().logs.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the suite's global subscriber once: a debug-level log capture and an OpenTelemetry
/// layer exporting to memory.
pub fn install() {
    SPANS.get_or_init(|| {
        medins_common::telemetry::install_propagator();
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(|| CaptureWriter)
            .with_ansi(false)
            .with_filter(EnvFilter::new("debug,h2=info,hyper=info,hyper_util=info,tower=info,r2d2=info"));
        tracing_subscriber::registry()
            .with(logs)
            .with(medins_common::telemetry::otel_layer(provider.tracer("e2e")))
            .try_init()
            .expect("one global subscriber");
        (exporter, provider)
    });
}

/// The spans exported so far.
pub fn finished_spans() -> Vec<opentelemetry_sdk::trace::SpanData> {
    let (exporter, provider) = SPANS.get().expect("installed");
    let _ = provider.force_flush();
    exporter.get_finished_spans().expect("spans")
}

/// The captured log text so far.
pub fn logs() -> String {
    String::from_utf8_lossy(&CAPTURE.lock().unwrap().logs).into_owned()
}

/// Panics if any seeded value appears in the captured logs or in any exported span's name or
/// attributes.
pub fn assert_no_leaks() {
    let spans: Vec<String> = finished_spans()
        .iter()
        .map(|span| {
            let attributes: Vec<String> = span
                .attributes
                .iter()
                // Timings (busy_ns, idle_ns) are numbers of the tracing layer, never data; left out
                // so that they cannot match a short token by chance.
                .filter(|kv| !kv.key.as_str().ends_with("_ns"))
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            let events: Vec<String> = span
                .events
                .iter()
                .map(|e| {
                    let fields: Vec<String> =
                        e.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                    format!("{} {}", e.name, fields.join(" "))
                })
                .collect();
            format!("{} {} {}", span.name, attributes.join(" "), events.join(" "))
        })
        .collect();
    let capture = CAPTURE.lock().unwrap();
    let logs = String::from_utf8_lossy(&capture.logs);
    for value in &capture.sensitive {
        assert!(!logs.contains(value.as_str()), "a seeded personal value reached the logs");
        assert!(!spans.iter().any(|s| s.contains(value.as_str())), "a seeded personal value reached a span");
    }
    for token in &capture.tokens {
        assert!(!contains_token(&logs, token), "a seeded SMS code reached the logs");
        assert!(!spans.iter().any(|s| contains_token(s, token)), "a seeded SMS code reached a span");
    }
}

#[test]
fn a_short_token_counts_only_where_it_stands_alone() {
    for leaked in ["code=123456", "\"123456\"", "123456", "code: 123456 sent", "(123456)"] {
        assert!(contains_token(leaked, "123456"), "{leaked}");
    }
    for chance in ["2026-11-23T10:12:34.123456Z", "01912345-6789-7abc-9123-456789abcdef", "x1234567", "a123456"] {
        assert!(!contains_token(chance, "123456"), "{chance}");
    }
}
