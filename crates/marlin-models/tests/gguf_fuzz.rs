//! Corrupted GGUF files: truncated at every offset, bytes flipped in the header, absurd
//! counts, lengths, dims and offsets. Every one must give an error or a valid file, never a
//! panic, an out-of-bounds read or a huge allocation; whatever opens must also convert,
//! translate and yield its vocabulary without panicking. Crashers found are kept at the end as
//! plain tests.

mod gguf_writer;

use gguf_writer::{Layout, Rng, Val, Writer, random_blocks, tiny_model, ty};
use marlin_models::gguf::{GgufFile, GgufModel};
use marlin_models::{ModelError, WeightSource};
use proptest::prelude::*;

/// A llama file with metadata of every type and tensors of every supported type.
fn rich() -> Writer {
    let mut rng = Rng::new(42);
    let mut w = tiny_model("llama", &mut rng)
        .kv("general.alignment", Val::U32(64))
        .kv("x.u8", Val::U8(1))
        .kv("x.i16", Val::I16(-2))
        .kv("x.u64", Val::U64(3))
        .kv("x.f64", Val::F64(0.5))
        .kv("x.bool", Val::Bool(false))
        .kv(
            "x.nested",
            Val::Arr(9, vec![Val::i32s(&[1, 2]), Val::strs(&["a", "b"])]),
        )
        .kv("tokenizer.chat_template", Val::str("{{ bos_token }}"));
    for (name, t, dims) in [
        ("q40", ty::Q4_0, [64u64, 2]),
        ("q41", ty::Q4_1, [32, 2]),
        ("q80", ty::Q8_0, [32, 3]),
        ("q50", ty::Q5_0, [32, 1]),
        ("q51", ty::Q5_1, [32, 1]),
        ("q2k", ty::Q2_K, [256, 1]),
        ("q3k", ty::Q3_K, [256, 1]),
        ("q4k", ty::Q4_K, [256, 1]),
        ("q5k", ty::Q5_K, [256, 1]),
        ("q6k", ty::Q6_K, [256, 2]),
    ] {
        let blocks = (dims[0] * dims[1]) as usize / gguf_writer::block(t).0;
        w = w.tensor(name, &dims, t, random_blocks(t, blocks, &mut rng));
    }
    w.tensor("f16", &[3], ty::F16, gguf_writer::f16s(&[1.0, 2.0, 3.0]))
        .tensor("bf16", &[2], ty::BF16, gguf_writer::bf16s(&[1.0, -1.0]))
}

fn rich_bytes() -> (Vec<u8>, Layout) {
    rich().build_with_layout()
}

/// Opens `bytes` and, if that works, uses everything in it; whether the file opened.
fn exercise(bytes: Vec<u8>) -> bool {
    let file = match GgufFile::from_bytes("fuzz.gguf", bytes) {
        Ok(f) => f,
        Err(e) => {
            // Errors name the file.
            assert!(e.to_string().contains("fuzz.gguf"), "{e}");
            return false;
        }
    };
    for t in file.tensors() {
        let _ = file.weight(&t.name);
    }
    for (key, value) in file.metadata() {
        let _ = (
            file.get_u64(key),
            file.get_f32(key),
            file.get_str(key),
            value.to_string(),
        );
    }
    if let Ok(model) = GgufModel::from_file(file) {
        for name in model.tensor_names() {
            let _ = model.weight(name);
        }
        let _ = model.vocab();
    }
    true
}

#[test]
fn the_rich_file_opens_and_converts() {
    let (bytes, _) = rich_bytes();
    let file = GgufFile::from_bytes("rich.gguf", bytes.clone()).unwrap();
    for t in file.tensors() {
        file.weight(&t.name)
            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    }
    let model = GgufModel::from_file(file).unwrap();
    for name in model.tensor_names() {
        model.weight(name).unwrap();
    }
    model.vocab().unwrap();
    assert!(exercise(bytes));
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let (bytes, _) = rich_bytes();
    for len in 0..bytes.len() {
        let opened = exercise(bytes[..len].to_vec());
        assert!(
            !opened,
            "a file cut at {len} of {} bytes opened",
            bytes.len()
        );
    }
}

/// The offsets of the header's counts and of the first key's and tensor's fields.
fn write_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn absurd_counts_and_lengths_fail_fast() {
    let (good, layout) = rich_bytes();
    let info = layout.info_offsets[0];
    // (where, value): tensor count, key-value count, first key's length, first tensor name's
    // length, its first dim, its offset ("token_embd.weight" is 17 bytes, 2 dims).
    let offset_at = info + 8 + 17 + 4 + 16 + 4;
    for (at, v) in [
        (8, u64::MAX),
        (8, 1 << 40),
        (16, u64::MAX),
        (16, u64::MAX / 13 + 1),
        (layout.kv_offsets[0], u64::MAX),
        (layout.kv_offsets[0], good.len() as u64),
        (info, u64::MAX - 7),
        (info + 8 + 17 + 4, u64::MAX),
        (info + 8 + 17 + 4, 1 << 62),
        (offset_at, u64::MAX - 63),
        (offset_at, 1 << 40),
    ] {
        let mut bytes = good.clone();
        write_u64(&mut bytes, at, v);
        let e = GgufFile::from_bytes("absurd.gguf", bytes).unwrap_err();
        assert!(matches!(e, ModelError::Malformed { .. }), "{at} = {v}: {e}");
    }
}

#[test]
fn a_huge_array_count_is_refused_before_allocating() {
    // One key holding a u64 array that claims 2^61 items in a 60-byte file.
    let mut bytes = Writer::default().kv("a", Val::Arr(10, vec![])).build();
    let count_at = bytes.len() - 8;
    write_u64(&mut bytes, count_at, 1 << 61);
    let e = GgufFile::from_bytes("a.gguf", bytes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("u64 array count 2305843009213693952 cannot fit"),
        "{e}"
    );
}

#[test]
fn deeply_nested_arrays_are_refused_without_recursing_forever() {
    // 100 000 levels of one-item arrays of arrays: 12 bytes each.
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    v.extend(1u64.to_le_bytes());
    gguf_writer::write_str(&mut v, "deep");
    v.extend(9u32.to_le_bytes());
    for _ in 0..100_000 {
        v.extend(9u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
    }
    let e = GgufFile::from_bytes("deep.gguf", v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested more than 16 deep"), "{e}");
    // 16 levels are fine.
    let mut inner = Val::Arr(0, vec![Val::U8(7)]);
    for _ in 0..15 {
        inner = Val::Arr(9, vec![inner]);
    }
    GgufFile::from_bytes("ok.gguf", Writer::default().kv("n", inner).build()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn flipped_header_bytes_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut bytes, layout) = rich_bytes();
        for (i, b) in flips {
            bytes[i.index(layout.data_offset)] = b;
        }
        let _ = exercise(bytes);
    }

    #[test]
    fn overwritten_header_words_never_panic(at in any::<prop::sample::Index>(), v in prop_oneof![
        any::<u64>(),
        0u64..256,
        Just(u64::MAX),
        (0u32..64).prop_map(|s| 1u64 << s),
    ]) {
        let (mut bytes, layout) = rich_bytes();
        let at = at.index(layout.data_offset - 8);
        write_u64(&mut bytes, at, v);
        let _ = exercise(bytes);
    }

    #[test]
    fn random_truncation_and_garbage_never_panic(cut in any::<prop::sample::Index>(), tail in prop::collection::vec(any::<u8>(), 0..64)) {
        let (bytes, _) = rich_bytes();
        let mut b = bytes[..cut.index(bytes.len())].to_vec();
        b.extend(tail);
        let _ = exercise(b);
    }

    #[test]
    fn random_bytes_are_not_gguf(mut bytes in prop::collection::vec(any::<u8>(), 0..512), gguf in any::<bool>()) {
        if gguf && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"GGUF\x03\0\0\0");
        }
        let _ = exercise(bytes);
    }

    #[test]
    fn random_tensor_data_always_converts(seed in any::<u64>()) {
        // Any bytes are valid codes and scales (NaN and infinite scales included).
        let (mut bytes, layout) = rich_bytes();
        let mut rng = Rng::new(seed);
        for b in &mut bytes[layout.data_offset..] {
            *b = rng.u64() as u8;
        }
        let file = GgufFile::from_bytes("r.gguf", bytes).unwrap();
        for t in file.tensors() {
            prop_assert!(file.weight(&t.name).is_ok(), "{}", t.name);
        }
    }
}

/// Config keys set to arbitrary values (huge ones included): translation must reject them
/// with an error, not overflow.
fn config_values() -> impl Strategy<Value = Vec<(usize, u64)>> {
    let value = prop_oneof![0u64..70, any::<u64>(), (0u32..64).prop_map(|s| 1u64 << s)];
    prop::collection::vec((0usize..CONFIG_KEYS.len(), value), 1..5)
}

const CONFIG_KEYS: [&str; 11] = [
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.attention.value_length",
    "llama.rope.dimension_count",
    "llama.vocab_size",
    "tokenizer.ggml.eos_token_id",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_config_values_never_panic(values in config_values(), wide in any::<bool>()) {
        let mut w = rich();
        for (key, v) in values {
            let key = CONFIG_KEYS[key];
            w.kv.retain(|(k, _)| k != key);
            w = w.kv(key, if wide { Val::U64(v) } else { Val::U32(v as u32) });
        }
        let _ = exercise(w.build());
    }
}

/// Corruptions of the real file's header (its 49152 tokens and 48900 merges make it the
/// largest metadata we parse).
#[test]
fn corrupted_smollm2_headers_never_panic() {
    let path = marlin_testkit::smollm2_gguf();
    let file = GgufFile::open(&path).unwrap();
    let data_offset = file.data_offset() as usize;
    let full = std::fs::read(&path).unwrap();
    let header = &full[..data_offset];
    let mut rng = Rng::new(5);
    for case in 0..48 {
        let mut bytes = header.to_vec();
        match case % 3 {
            0 => bytes.truncate(rng.u64() as usize % data_offset),
            1 => {
                for _ in 0..4 {
                    let i = rng.u64() as usize % data_offset;
                    bytes[i] = rng.u64() as u8;
                }
            }
            _ => {
                let i = rng.u64() as usize % (data_offset - 8);
                write_u64(&mut bytes, i, rng.u64() >> (rng.u64() % 64));
            }
        }
        // Without the tensor data no corruption can open.
        assert!(!exercise(bytes), "case {case}");
    }
}

// Crashers found by the tests above, kept as plain tests.

/// `arbitrary_config_values_never_panic`: a key_length of 2^34 made heads x head size
/// overflow while checking the tensor shapes.
#[test]
fn crasher_huge_key_length() {
    let w = rich().kv("llama.attention.key_length", Val::U64(17_179_869_184));
    let e = GgufModel::from_file(GgufFile::from_bytes("k.gguf", w.build()).unwrap()).unwrap_err();
    assert!(
        matches!(e, ModelError::Config { .. } | ModelError::Shape { .. }),
        "{e}"
    );
}

/// Found in review beside the crasher above: a head count near usize::MAX doubled in the
/// un-permutation.
#[test]
fn crasher_unpermute_head_count_overflow() {
    use marlin_models::gguf::unpermute_source_rows;
    assert_eq!(unpermute_source_rows(8, usize::MAX), None);
    assert_eq!(unpermute_source_rows(8, usize::MAX / 2 + 1), None);
}

#[test]
fn q_rows_that_are_not_whole_heads_are_a_shape_error() {
    let mut w = rich();
    w.tensors.retain(|t| t.name != "blk.1.attn_q.weight");
    let w = w.f32_tensor("blk.1.attn_q.weight", &[8, 6], &[0.0; 48]);
    let m = GgufModel::from_file(GgufFile::from_bytes("q.gguf", w.build()).unwrap()).unwrap();
    let e = m
        .weight("model.layers.1.self_attn.q_proj.weight")
        .unwrap_err();
    assert!(matches!(e, ModelError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("q_proj"), "{e}");
}
