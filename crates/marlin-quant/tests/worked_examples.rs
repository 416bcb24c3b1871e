//! The worked examples of `docs/formats.md` are parsed out of the document and checked line by
//! line against the library, so the document cannot drift from the code. Regenerate them with
//! `cargo run -p marlin-quant --example worked_examples`.

use std::collections::BTreeMap;

use marlin_quant::layout::{block_bytes, unpack_block};
use marlin_quant::{BLOCK, Format, Group, Scheme, quantize};

/// One example block: `key: value` lines.
type Example = BTreeMap<String, String>;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/formats.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// Every fenced block whose first line is `scheme: ...`.
fn examples(doc: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut current: Option<Example> = None;
    for line in doc.lines() {
        if line.starts_with("```") {
            if let Some(ex) = current.take().filter(|ex| ex.contains_key("scheme")) {
                out.push(ex);
            }
            current = (line.trim() == "```text").then(Example::new);
            continue;
        }
        if let (Some(ex), Some((key, value))) = (current.as_mut(), line.split_once(':')) {
            ex.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    out
}

fn parse_scheme(text: &str) -> Scheme {
    let (format, group) = text.split_once(' ').expect("scheme: <format> <group>");
    let format: Format = format.parse().unwrap();
    let group = match group {
        "channel" => Group::PerChannel,
        g => Group::Size(g.trim_start_matches('g').parse().expect("g<size>")),
    };
    Scheme::new(format, group).unwrap()
}

fn floats(text: &str) -> Vec<f32> {
    text.split_whitespace()
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{v}: {e}")))
        .collect()
}

fn bytes(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|v| u8::from_str_radix(v, 16).unwrap_or_else(|e| panic!("{v}: {e}")))
        .collect()
}

/// `4 10 0 6, padding 8` -> the codes of the weights and of the padding, as written.
fn codes(text: &str) -> (Vec<i16>, i16) {
    let (given, pad) = text
        .split_once(", padding ")
        .expect("codes: ..., padding P");
    let given = given
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    (given, pad.trim().parse().unwrap())
}

fn check(ex: &Example) {
    let get = |key: &str| {
        ex.get(key)
            .unwrap_or_else(|| panic!("example {:?} lacks '{key}'", ex["scheme"]))
    };
    let scheme = parse_scheme(get("scheme"));
    let format = scheme.format();
    let weights = floats(get("weights"));
    let k = weights.len();
    let q = quantize(&weights, 1, k, scheme).unwrap();
    let ctx = scheme.to_string();

    assert_eq!(bytes(get("code bytes")), q.codes(), "{ctx}: code bytes");
    assert_eq!(bytes(get("scale bytes")), q.scales(), "{ctx}: scale bytes");
    let groups = q.groups_per_row();
    let scales: Vec<f32> = (0..groups).map(|g| q.scale(0, g)).collect();
    assert_eq!(floats(get("scales")), scales, "{ctx}: scales");
    if format.has_bias() {
        assert_eq!(bytes(get("bias bytes")), q.biases(), "{ctx}: bias bytes");
        let biases: Vec<f32> = (0..groups).map(|g| q.bias(0, g)).collect();
        assert_eq!(floats(get("biases")), biases, "{ctx}: biases");
    } else {
        assert!(!ex.contains_key("biases"), "{ctx} has no biases");
    }
    match ex.get("global scale") {
        Some(g) => assert_eq!(floats(g), [q.global_scale()], "{ctx}: global scale"),
        None => assert_eq!(q.global_scale(), 1.0, "{ctx}: global scale not shown"),
    }

    let bits = format.bits();
    let mut all = Vec::new();
    let mut block = [0u8; BLOCK];
    for chunk in q.codes().chunks_exact(block_bytes(bits)) {
        unpack_block(bits, chunk, &mut block);
        // INT8 codes are shown signed.
        all.extend(block.iter().map(|&c| match format {
            Format::Int8 => c as i8 as i16,
            _ => c as i16,
        }));
    }
    let (given, pad) = codes(get("codes"));
    assert_eq!(given, all[..k], "{ctx}: codes");
    assert!(
        all[k..].iter().all(|&c| c == pad),
        "{ctx}: padding {:?}",
        &all[k..]
    );

    assert_eq!(
        floats(get("dequantized")),
        q.dequantize(),
        "{ctx}: dequantized"
    );
}

#[test]
fn every_format_has_one_worked_example_and_each_is_right() {
    let all = examples(&doc());
    let mut formats: Vec<Format> = all
        .iter()
        .map(|ex| parse_scheme(&ex["scheme"]).format())
        .collect();
    formats.sort_by_key(|f| f.name());
    let mut expected = Format::ALL.to_vec();
    expected.sort_by_key(|f| f.name());
    assert_eq!(formats, expected, "one example per format");
    for ex in &all {
        check(ex);
    }
}

#[test]
fn the_checker_catches_a_wrong_line() {
    let doc = doc();
    let ex = &examples(&doc)[0];
    for key in ["code bytes", "scales", "dequantized", "codes"] {
        let mut bad = ex.clone();
        let v = bad.get_mut(key).unwrap();
        // Change the first digit of the line.
        let i = v.find(|c: char| c.is_ascii_digit()).unwrap();
        let d = v.as_bytes()[i];
        v.replace_range(i..=i, if d == b'1' { "2" } else { "1" });
        assert!(
            std::panic::catch_unwind(|| check(&bad)).is_err(),
            "a wrong '{key}' line passed"
        );
    }
}
