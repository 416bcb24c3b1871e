//! Prints the worked example of every format in `docs/formats.md`: the same four weights,
//! quantized with RTN, shown as codes, bytes and dequantized values.
//!
//! ```text
//! cargo run -p marlin-quant --example worked_examples
//! ```
//!
//! `tests/worked_examples.rs` parses those blocks back out of the document and checks every
//! line against the library, so the document cannot drift from the code.

use marlin_quant::layout::{block_bytes, unpack_block};
use marlin_quant::{BLOCK, Format, Group, QuantMatrix, Scheme, quantize};

/// Four weights, one of largest magnitude, one negative, one that rounds.
const WEIGHTS: [f32; 4] = [0.5, -0.3, 1.0, 0.2];

fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(" ")
}

fn list(values: impl IntoIterator<Item = f32>) -> String {
    let parts: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
    parts.join(" ")
}

fn codes(q: &QuantMatrix<'_>) -> Vec<u8> {
    let bits = q.format().bits();
    let mut all = Vec::new();
    let mut block = [0u8; BLOCK];
    for chunk in q.row_codes(0).chunks_exact(block_bytes(bits)) {
        unpack_block(bits, chunk, &mut block);
        all.extend_from_slice(&block);
    }
    all
}

fn example(scheme: Scheme) -> String {
    let k = WEIGHTS.len();
    let q = quantize(&WEIGHTS, 1, k, scheme).expect("the example quantizes");
    let group = match scheme.group() {
        Group::Size(g) => format!("g{g}"),
        Group::PerChannel => "channel".to_string(),
    };
    let c = codes(&q);
    // INT8 codes are two's-complement bytes: show them signed.
    let show = |v: u8| match scheme.format() {
        Format::Int8 => (v as i8).to_string(),
        _ => v.to_string(),
    };
    let first: Vec<String> = c[..k].iter().map(|&v| show(v)).collect();
    let mut lines = vec![
        format!("scheme:       {} {group}", scheme.format()),
        format!("weights:      {}", list(WEIGHTS)),
    ];
    if scheme.format() == Format::Nvfp4 {
        lines.push(format!("global scale: {}", q.global_scale()));
    }
    let groups = 0..q.groups_per_row();
    lines.push(format!(
        "scales:       {}",
        list(groups.clone().map(|g| q.scale(0, g)))
    ));
    lines.push(format!("scale bytes:  {}", hex(q.scales())));
    if scheme.format().has_bias() {
        lines.push(format!(
            "biases:       {}",
            list(groups.map(|g| q.bias(0, g)))
        ));
        lines.push(format!("bias bytes:   {}", hex(q.biases())));
    }
    lines.push(format!(
        "codes:        {}, padding {}",
        first.join(" "),
        show(c[k])
    ));
    lines.push(format!("code bytes:   {}", hex(q.codes())));
    lines.push(format!("dequantized:  {}", list(q.dequantize())));
    lines.join("\n")
}

fn main() {
    for format in Format::ALL {
        println!("{format}:\n```text\n{}\n```\n", example(Scheme::of(format)));
    }
}
