//! `GET /metrics`: counters and histograms in Prometheus' text format (names as vLLM's, with
//! the prefix `marlin_`).

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use marlin_engine::scheduler::Load;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A stop token or string.
    Stop,
    /// Its token budget.
    Length,
    /// The client went away first.
    Cancelled,
    /// The server failed it.
    Failed,
    /// Refused before generating (bad request, overload).
    Rejected,
}

const OUTCOMES: [(Outcome, &str); 5] = [
    (Outcome::Stop, "stop"),
    (Outcome::Length, "length"),
    (Outcome::Cancelled, "cancelled"),
    (Outcome::Failed, "failed"),
    (Outcome::Rejected, "rejected"),
];

/// Upper bounds (seconds): time to first token spans a fast GPU to a long prompt on a CPU.
const TTFT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const ITL_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
];

#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 5],
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    ttft: Histogram<14>,
    itl: Histogram<13>,
}

impl Metrics {
    pub fn request(&self, outcome: Outcome) {
        let i = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        let generated = generated as u64;
        self.generation_tokens
            .fetch_add(generated, Ordering::Relaxed);
    }

    pub fn first_token(&self, t: Duration) {
        self.ttft.observe(t.as_secs_f64(), &TTFT_BUCKETS);
    }

    pub fn inter_token(&self, t: Duration) {
        self.itl.observe(t.as_secs_f64(), &ITL_BUCKETS);
    }

    /// The text exposition, with the scheduler's `load` as gauges.
    pub fn render(&self, load: &Load) -> String {
        let mut out = String::new();
        let w = &mut out;
        header(
            w,
            "requests_total",
            "counter",
            "Requests by how they ended.",
        );
        for ((_, name), n) in OUTCOMES.iter().zip(&self.outcomes) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(w, "marlin_requests_total{{outcome=\"{name}\"}} {n}");
        }
        let counter = |w: &mut String, name, help, v: &AtomicU64| {
            header(w, name, "counter", help);
            let _ = writeln!(w, "marlin_{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            w,
            "prompt_tokens_total",
            "Prompt tokens of admitted requests.",
            &self.prompt_tokens,
        );
        counter(
            w,
            "generation_tokens_total",
            "Generated tokens.",
            &self.generation_tokens,
        );
        let ttft_help = "Seconds from a request's arrival to its first token.";
        self.ttft
            .render(w, "time_to_first_token_seconds", ttft_help, &TTFT_BUCKETS);
        let itl_help = "Seconds between a request's consecutive tokens.";
        self.itl
            .render(w, "inter_token_latency_seconds", itl_help, &ITL_BUCKETS);
        let gauge = |w: &mut String, name, help, v: f64| {
            header(w, name, "gauge", help);
            let _ = writeln!(w, "marlin_{name} {v}");
        };
        gauge(
            w,
            "num_requests_running",
            "Requests in the batch.",
            load.running as f64,
        );
        gauge(
            w,
            "num_requests_waiting",
            "Requests queued for a place.",
            load.waiting as f64,
        );
        let cap = load.kv_cache_tokens.max(1) as f64;
        let used = load.kv_cache_used_tokens as f64 / cap;
        gauge(
            w,
            "kv_cache_usage_perc",
            "Fraction of KV cache positions holding tokens.",
            used,
        );
        let reserved = load.kv_cache_reserved_tokens as f64 / cap;
        let help = "Fraction of KV cache positions reserved by admitted requests.";
        gauge(w, "kv_cache_reserved_perc", help, reserved);
        gauge(w, "kv_cache_tokens", "KV cache capacity in positions.", cap);
        counter(
            w,
            "forward_passes_total",
            "Batched forward passes run.",
            &AtomicU64::new(load.steps),
        );
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        w,
        "# HELP marlin_{name} {help}\n# TYPE marlin_{name} {kind}"
    );
}

/// A histogram over `N` fixed bounds (plus +Inf).
struct Histogram<const N: usize> {
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            inner: Mutex::new((vec![0; N], 0.0, 0)),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, x: f64, bounds: &[f64; N]) {
        let mut h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = bounds.iter().position(|&b| x <= b) {
            h.0[i] += 1;
        }
        h.1 += x;
        h.2 += 1;
    }

    fn render(&self, w: &mut String, name: &str, help: &str, bounds: &[f64; N]) {
        let h = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        header(w, name, "histogram", help);
        let mut cumulative = 0;
        for (b, n) in bounds.iter().zip(&h.0) {
            cumulative += n;
            let _ = writeln!(w, "marlin_{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(w, "marlin_{name}_bucket{{le=\"+Inf\"}} {}", h.2);
        let _ = writeln!(w, "marlin_{name}_sum {}\nmarlin_{name}_count {}", h.1, h.2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.first_token(Duration::from_millis(3));
        m.first_token(Duration::from_secs(60));
        m.request(Outcome::Length);
        let text = m.render(&Load::default());
        assert!(text.contains("marlin_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("marlin_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("marlin_requests_total{outcome=\"length\"} 1"));
    }
}
