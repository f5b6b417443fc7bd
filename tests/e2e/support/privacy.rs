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
    /// Everything logged so far.
    logs: Vec<u8>,
}

static CAPTURE: Mutex<Capture> = Mutex::new(Capture { sensitive: Vec::new(), logs: Vec::new() });
static SPANS: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();

/// Records a value that must never appear in logs or spans.
pub fn sensitive(value: &str) {
    CAPTURE.lock().unwrap().sensitive.push(value.to_owned());
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
            let attributes: Vec<String> = span.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
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
}
