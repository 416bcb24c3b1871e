//! The results of `bench kernels`: one record per format and M, as a table or as JSON.

use std::time::Duration;

use serde::Serialize;

/// Where the numbers were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The CPU model as the OS names it.
    pub cpu: String,
    /// The kernels' instruction-set level.
    pub isa: String,
    /// Activation precision inside the quantized matmul (`int8` or `f32`).
    pub activations: &'static str,
    /// Rayon threads every measurement ran on.
    pub threads: usize,
    /// Int8 multiply-adds per second of the ISA's dot-product instructions on all threads
    /// (`marlin_cpu::peak`), in G/s: the arithmetic ceiling once weight reads stop binding.
    pub int8_peak_gmacs: f64,
}

impl Machine {
    pub fn header(&self, n: usize, k: usize) -> String {
        format!(
            "# bench kernels: N={n} K={k}, isa {}, {} activations, {} threads, {}\n\
             # int8 multiply-add peak: {:.0} G/s",
            self.isa, self.activations, self.threads, self.cpu, self.int8_peak_gmacs
        )
    }
}

/// One format at one M. Times are medians in microseconds; GB/s count bytes of the quantized
/// matrix (codes + scales + biases), 1 GB = 1e9 bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub format: &'static str,
    /// Weights per scale along K, or `channel`.
    pub group: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Bytes of the quantized matrix: what the kernel has to read.
    pub weight_bytes: usize,
    pub time_us: f64,
    /// `weight_bytes / time`.
    pub gbps: f64,
    /// Dense f32 matmul of the same shape (`gemm`).
    pub dense_f32_us: f64,
    /// `dense_f32_us / time_us`: above 1 the quantized matmul is faster.
    pub speedup_vs_dense_f32: f64,
    /// One streaming read of the same bytes.
    pub stream_read_us: f64,
    pub stream_read_gbps: f64,
    /// `stream_read_us / time_us`: 1 means the kernel runs at read bandwidth.
    pub fraction_of_stream_read: f64,
    /// `time_us / time_us at M=1` of the same format; absent when M=1 was not measured.
    pub cost_vs_m1: Option<f64>,
    /// `M * N * K / time` over the machine's int8 multiply-add peak: 1 means the kernel runs
    /// at the arithmetic ceiling.
    pub fraction_of_int8_mac_peak: f64,
    #[serde(flatten)]
    pub machine: Machine,
}

/// The measured times of one format at one M, before they become ratios.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub quant: Duration,
    pub dense: Duration,
    pub stream: Duration,
    /// The same format's time at M=1, when measured.
    pub m1: Option<Duration>,
}

impl Record {
    pub fn new(
        format: &'static str,
        group: String,
        (m, n, k): (usize, usize, usize),
        weight_bytes: usize,
        t: Times,
        machine: Machine,
    ) -> Self {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let gbps = |d: Duration| weight_bytes as f64 / d.as_secs_f64() / 1e9;
        let quant = t.quant.as_secs_f64();
        Record {
            format,
            group,
            m,
            n,
            k,
            weight_bytes,
            time_us: us(t.quant),
            gbps: gbps(t.quant),
            dense_f32_us: us(t.dense),
            speedup_vs_dense_f32: t.dense.as_secs_f64() / quant,
            stream_read_us: us(t.stream),
            stream_read_gbps: gbps(t.stream),
            fraction_of_stream_read: t.stream.as_secs_f64() / quant,
            cost_vs_m1: t.m1.map(|m1| quant / m1.as_secs_f64()),
            fraction_of_int8_mac_peak: (m * n * k) as f64 / quant / (machine.int8_peak_gmacs * 1e9),
            machine,
        }
    }
}

/// The table's column titles, aligned with [`table_row`].
pub fn table_head() -> String {
    format!(
        "{:<12} {:>7} {:>4} {:>10} {:>7} {:>8} {:>10} {:>8} {:>7} {:>8}",
        "format",
        "group",
        "M",
        "time µs",
        "GB/s",
        "vs f32",
        "read GB/s",
        "of read",
        "vs M=1",
        "of MACs"
    )
}

pub fn table_row(r: &Record) -> String {
    let m1 = r
        .cost_vs_m1
        .map_or_else(|| "-".to_string(), |c| format!("{c:.2}x"));
    format!(
        "{:<12} {:>7} {:>4} {:>10.1} {:>7.1} {:>7.2}x {:>10.1} {:>7.0}% {:>7} {:>7.0}%",
        r.format,
        r.group,
        r.m,
        r.time_us,
        r.gbps,
        r.speedup_vs_dense_f32,
        r.stream_read_gbps,
        r.fraction_of_stream_read * 100.0,
        m1,
        r.fraction_of_int8_mac_peak * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(m1: Option<Duration>) -> Record {
        let machine = Machine {
            cpu: "test cpu".into(),
            isa: "scalar".into(),
            activations: "int8",
            threads: 2,
            int8_peak_gmacs: 100.0,
        };
        let t = Times {
            quant: Duration::from_micros(200),
            dense: Duration::from_micros(1000),
            stream: Duration::from_micros(150),
            m1,
        };
        Record::new("int4", "32".into(), (16, 4096, 4096), 9_437_184, t, machine)
    }

    #[test]
    fn ratios_follow_their_definitions() {
        let r = record(Some(Duration::from_micros(100)));
        assert!((r.speedup_vs_dense_f32 - 5.0).abs() < 1e-9);
        assert!((r.fraction_of_stream_read - 0.75).abs() < 1e-9);
        assert!((r.cost_vs_m1.unwrap() - 2.0).abs() < 1e-9);
        assert!((r.gbps - 9_437_184.0 / 200e-6 / 1e9).abs() < 1e-9);
        let macs = 16.0 * 4096.0 * 4096.0 / 200e-6;
        assert!((r.fraction_of_int8_mac_peak - macs / 100e9).abs() < 1e-9);
    }

    #[test]
    fn json_is_flat_with_machine_info() {
        let v = serde_json::to_value(record(None)).unwrap();
        for key in [
            "format",
            "m",
            "time_us",
            "fraction_of_stream_read",
            "fraction_of_int8_mac_peak",
            "int8_peak_gmacs",
            "isa",
            "threads",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert!(v["cost_vs_m1"].is_null());
    }

    #[test]
    fn table_rows_line_up_with_the_head() {
        let head = table_head();
        let row = table_row(&record(None));
        assert_eq!(head.chars().count(), row.chars().count(), "\n{head}\n{row}");
    }
}
