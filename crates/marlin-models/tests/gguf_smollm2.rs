//! The real default model, SmolLM2-135M-Instruct Q4_1 GGUF (`marlin_testkit::smollm2_gguf`:
//! `MARLIN_SMOLLM2_GGUF`, else the cache, fetched there if needed).

use marlin_models::gguf::{GgmlType, GgufModel};
use marlin_models::{Architecture, Weight, WeightSource};
use marlin_quant::Format;

#[test]
fn smollm2_config_tensors_and_vocab() {
    let path = marlin_testkit::smollm2_gguf();
    let model = GgufModel::open(&path).unwrap();
    let c = model.config();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (30, 576, 9, 3)
    );
    assert_eq!(
        (c.head_dim, c.intermediate_size, c.vocab_size),
        (64, 1536, 49152)
    );
    assert!(c.tie_word_embeddings && !c.attention_bias && c.rope_scaling.is_none());
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.as_slice()),
        (Some(1), &[2][..])
    );
    assert_eq!(c.max_position_embeddings, 8192);
    assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));

    let file = model.file();
    assert_eq!(
        file.tensor("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    for t in file.tensors() {
        if t.name.contains(".ffn_") && !t.name.contains("norm") {
            assert_eq!(t.ggml_type, GgmlType::Q4_1, "{}", t.name);
        }
        if t.name.contains("norm") {
            assert_eq!(t.ggml_type, GgmlType::F32, "{}", t.name);
        }
    }
    // 30 layers x 9 tensors, the embedding and the final norm; no lm_head (tied).
    assert_eq!(model.tensor_names().len(), 30 * 9 + 2);
    assert!(!model.contains("lm_head.weight"));
    let quant_format = |name: &str| match model.weight(name).unwrap() {
        Weight::Quant(q) => Some((q.format(), q.rows(), q.cols())),
        _ => None,
    };
    assert_eq!(
        quant_format("model.embed_tokens.weight"),
        Some((Format::Int8, 49152, 576))
    );
    assert_eq!(
        quant_format("model.layers.29.mlp.down_proj.weight"),
        Some((Format::Int4Affine, 576, 1536))
    );
    match model.weight("model.norm.weight").unwrap() {
        Weight::Dense(t) => assert_eq!(t.shape, vec![576]),
        _ => panic!("the final norm is F32"),
    }
    // Every tensor converts.
    for name in model.tensor_names() {
        model.weight(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    let v = model.vocab().unwrap();
    assert_eq!(
        (v.model.as_str(), v.tokens.len(), v.merges.len()),
        ("gpt2", 49152, 48900)
    );
    assert_eq!(v.token_types.len(), 49152);
    assert_eq!((v.bos_token_id, v.eos_token_id), (Some(1), Some(2)));
    assert_eq!((v.unknown_token_id, v.padding_token_id), (Some(0), Some(2)));
    assert!(!v.add_bos_token && !v.add_space_prefix);
    assert_eq!(v.pre, "smollm");
    assert!(
        v.chat_template
            .as_deref()
            .is_some_and(|t| t.contains("<|im_start|>"))
    );
    assert_eq!(v.tokens[504], "The");
}

fn dequantized(w: Weight) -> (usize, usize, Vec<f32>) {
    match w {
        Weight::Quant(q) => (q.rows(), q.cols(), q.dequantize()),
        Weight::Dense(t) => (t.shape[0], t.shape[1], t.data),
        Weight::Sparse(_) => panic!("GGUF files hold no sparse matrices"),
    }
}

/// Layer 0's q_proj and k_proj equal what Hugging Face transformers loads from the same file
/// (fixtures/smollm2_attn_reference.txt, made by fixtures/make_gguf_fixtures.py): the loader
/// un-permutes llama.cpp's rows exactly as transformers does.
#[test]
fn smollm2_q_and_k_match_transformers() {
    let path = marlin_testkit::smollm2_gguf();
    let model = GgufModel::open(&path).unwrap();
    let reference = include_str!("fixtures/smollm2_attn_reference.txt");
    // (name, cols, ours, the GGUF rows as stored) of the weight being checked.
    let mut current: Option<(String, usize, Vec<f32>, Vec<f32>)> = None;
    let (mut checked, mut moved) = (0, 0);
    for line in reference.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["weight", name, rows, cols] => {
                let (r, c, ours) = dequantized(model.weight(name).unwrap());
                assert_eq!(
                    (r.to_string(), c.to_string()),
                    (rows.to_string(), cols.to_string())
                );
                let gguf = model.gguf_name(name).unwrap();
                let (_, _, raw) = dequantized(model.file().weight(gguf).unwrap());
                current = Some((name.to_string(), c, ours, raw));
            }
            ["at", row, col, bits] => {
                let (name, cols, ours, raw) = current.as_ref().expect("a weight line first");
                let (row, col): (usize, usize) = (row.parse().unwrap(), col.parse().unwrap());
                let want = f32::from_bits(u32::from_str_radix(bits, 16).unwrap());
                let got = ours[row * cols + col];
                assert_eq!(got, want, "{name}[{row}, {col}]");
                moved += usize::from(raw[row * cols + col] != want);
                checked += 1;
            }
            _ => panic!("bad fixture line {line:?}"),
        }
    }
    assert_eq!(checked, 2 * 96);
    // Without un-permuting, most entries would differ (so this test can fail).
    assert!(
        moved > checked / 2,
        "only {moved} of {checked} entries moved"
    );
}
