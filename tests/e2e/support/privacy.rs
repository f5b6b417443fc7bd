//! Captures every log line (at debug level) and every exported span of the whole suite, and
//! checks them against every personal value tests seeded.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use aho_corasick::AhoCorasick;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt, util::SubscriberInitExt};

/// Bytes of already checked text checked again with the next window, so that a value written
/// across the boundary of two checks is still found (seeded values are far shorter).
const OVERLAP: usize = 1024;

struct Capture {
    /// Seeded personal values (names, ID numbers, phones, codes).
    sensitive: Vec<String>,
    /// Short secrets (SMS codes), matched only as whole tokens: see [`sensitive_token`].
    tokens: Vec<String>,
    /// Every log line and every exported span (name, attributes, events) so far, as text.
    text: String,
    /// How much of `text` has been checked against every value seeded before that check.
    checked: usize,
}

static CAPTURE: Mutex<Capture> =
    Mutex::new(Capture { sensitive: Vec::new(), tokens: Vec::new(), text: String::new(), checked: 0 });
static SPANS: OnceLock<(CaptureExporter, SdkTracerProvider)> = OnceLock::new();

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

/// Whether the occurrence of a token at `at..at + len` in `text` has no letter or digit right
/// before or after it.
fn stands_alone(text: &str, at: usize, len: usize) -> bool {
    let before = text[..at].chars().next_back();
    let after = text[at + len..].chars().next();
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        CAPTURE.lock().unwrap().text.push_str(&line);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Keeps every exported span (for the telemetry tests) and appends its name, attributes and
/// events to the checked text as it is exported.
#[derive(Clone, Debug, Default)]
struct CaptureExporter {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

fn span_text(span: &SpanData) -> String {
    let attributes: Vec<String> = span
        .attributes
        .iter()
        // Timings (busy_ns, idle_ns) are numbers of the tracing layer, never data; left out so
        // that they cannot match a short token by chance.
        .filter(|kv| !kv.key.as_str().ends_with("_ns"))
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    let events: Vec<String> = span
        .events
        .iter()
        .map(|e| {
            let fields: Vec<String> = e.attributes.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect();
            format!("{} {}", e.name, fields.join(" "))
        })
        .collect();
    format!("span {} {} {}\n", span.name, attributes.join(" "), events.join(" "))
}

impl SpanExporter for CaptureExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let text: String = batch.iter().map(span_text).collect();
        CAPTURE.lock().unwrap().text.push_str(&text);
        self.spans.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// What of `sensitive` (anywhere) or `tokens` (standing alone) occurs in `text`, if anything.
fn find_leak(text: &str, sensitive: &[String], tokens: &[String]) -> Option<&'static str> {
    if !sensitive.is_empty() {
        let automaton = AhoCorasick::new(sensitive).expect("seeded values build an automaton");
        if automaton.find(text).is_some() {
            return Some("a seeded personal value");
        }
    }
    if !tokens.is_empty() {
        let automaton = AhoCorasick::new(tokens).expect("seeded tokens build an automaton");
        if automaton.find_overlapping_iter(text).any(|found| stands_alone(text, found.start(), found.len())) {
            return Some("a seeded SMS code");
        }
    }
    None
}

/// Installs the suite's global subscriber once: a debug-level log capture and an OpenTelemetry
/// layer exporting to memory.
pub fn install() {
    SPANS.get_or_init(|| {
        medins_common::telemetry::install_propagator();
        let exporter = CaptureExporter::default();
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
pub fn finished_spans() -> Vec<SpanData> {
    let (exporter, provider) = SPANS.get().expect("installed");
    let _ = provider.force_flush();
    exporter.spans.lock().unwrap().clone()
}

/// The captured log and span text so far.
pub fn logs() -> String {
    CAPTURE.lock().unwrap().text.clone()
}

/// Panics if any seeded value appears in the captured logs or in any exported span's name,
/// attributes or events.
///
/// Each call checks only the text captured since the previous call (with a small overlap),
/// against every value seeded so far, in one pass of a multi-pattern automaton: a value can
/// only leak after it was seeded, and earlier text was checked against every value seeded
/// before it. The whole suite's text is thus scanned about once, however many tests run.
pub fn assert_no_leaks() {
    if let Some((_, provider)) = SPANS.get() {
        let _ = provider.force_flush();
    }
    let (window, sensitive, tokens) = {
        let mut capture = CAPTURE.lock().unwrap();
        let mut start = capture.checked.saturating_sub(OVERLAP);
        while !capture.text.is_char_boundary(start) {
            start -= 1;
        }
        let window = capture.text[start..].to_owned();
        capture.checked = capture.text.len();
        (window, capture.sensitive.clone(), capture.tokens.clone())
    };
    if let Some(what) = find_leak(&window, &sensitive, &tokens) {
        panic!("{what} reached the logs or a span");
    }
}

#[test]
fn a_short_token_counts_only_where_it_stands_alone() {
    let code = ["123456".to_owned()];
    for leaked in ["code=123456", "\"123456\"", "123456", "code: 123456 sent", "(123456)", "x1234567 code=123456"] {
        assert_eq!(find_leak(leaked, &[], &code), Some("a seeded SMS code"), "{leaked}");
    }
    for chance in ["2026-11-23T10:12:34.123456Z", "01912345-6789-7abc-9123-456789abcdef", "x1234567", "a123456"] {
        assert_eq!(find_leak(chance, &[], &code), None, "{chance}");
    }
}

#[test]
fn any_seeded_value_anywhere_in_the_text_is_a_leak() {
    let seeded = ["张三丰".to_owned(), "11010519491231002X".to_owned(), "13812341234".to_owned()];
    for leaked in ["person 张三丰 registered", "id=11010519491231002X", "span phone=13812341234 "] {
        assert_eq!(find_leak(leaked, &seeded, &[]), Some("a seeded personal value"), "{leaked}");
    }
    assert_eq!(find_leak("person *三 registered, phone 138****1234", &seeded, &[]), None);
}
