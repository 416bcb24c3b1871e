//! GGUF as a model: configuration from metadata, Hugging Face names, llama's q/k un-permuting
//! (dense and quantized), Llama 3.1 rope scaling, the embedded vocabulary, and the errors of
//! files whose metadata is missing or disagrees with the tensors.

mod gguf_writer;

use gguf_writer::{Rng, Val, Writer, tiny_model, ty};
use marlin_models::gguf::translate::llama3_rope_factors;
use marlin_models::gguf::{GgufFile, GgufModel};
use marlin_models::{Architecture, ModelError, RopeScaling, Weight, WeightSource};
use marlin_quant::Format;

fn model(w: &Writer) -> Result<GgufModel, ModelError> {
    GgufModel::from_file(GgufFile::from_bytes("m.gguf", w.build())?)
}

fn set_kv(mut w: Writer, key: &str, v: Val) -> Writer {
    w.kv.retain(|(k, _)| k != key);
    w.kv(key, v)
}

fn without_kv(mut w: Writer, key: &str) -> Writer {
    w.kv.retain(|(k, _)| k != key);
    w
}

fn set_tensor(mut w: Writer, name: &str, dims: &[u64], t: u32, data: Vec<u8>) -> Writer {
    w.tensors.retain(|t| t.name != name);
    w.tensor(name, dims, t, data)
}

fn dense(w: Weight) -> (Vec<usize>, Vec<f32>) {
    match w {
        Weight::Dense(t) => (t.shape, t.data),
        Weight::Quant(q) => (vec![q.rows(), q.cols()], q.dequantize()),
        Weight::Sparse(s) => (vec![s.rows(), s.cols()], s.dequantize()),
    }
}

#[test]
fn llama_config_and_names() {
    let m = model(&tiny_model("llama", &mut Rng::new(1))).unwrap();
    let c = m.config();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers
        ),
        (16, 8, 12, 2)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (2, 1, 4)
    );
    assert_eq!(
        (c.max_position_embeddings, c.rms_norm_eps, c.rope_theta),
        (256, 1e-5, 10000.0)
    );
    assert!(c.tie_word_embeddings && !c.attention_bias && c.rope_scaling.is_none());
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    assert_eq!(m.tensor_names().len(), 2 + 2 * 9);
    for (hf, gguf) in [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        (
            "model.layers.1.input_layernorm.weight",
            "blk.1.attn_norm.weight",
        ),
        (
            "model.layers.0.self_attn.v_proj.weight",
            "blk.0.attn_v.weight",
        ),
        (
            "model.layers.0.self_attn.o_proj.weight",
            "blk.0.attn_output.weight",
        ),
        (
            "model.layers.1.post_attention_layernorm.weight",
            "blk.1.ffn_norm.weight",
        ),
        (
            "model.layers.1.mlp.gate_proj.weight",
            "blk.1.ffn_gate.weight",
        ),
        ("model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"),
        (
            "model.layers.0.mlp.down_proj.weight",
            "blk.0.ffn_down.weight",
        ),
    ] {
        assert!(m.contains(hf), "{hf}");
        assert_eq!(m.gguf_name(hf), Some(gguf));
        // Tensors other than q and k are served as stored.
        assert_eq!(
            dense(m.weight(hf).unwrap()),
            dense(m.file().weight(gguf).unwrap()),
            "{hf}"
        );
    }
    assert_eq!(
        m.weight("model.layers.0.mlp.down_proj.weight")
            .unwrap()
            .shape(),
        vec![8, 12]
    );
    assert!(!m.contains("lm_head.weight"));
    let e = m.weight("lm_head.weight").unwrap_err();
    assert!(matches!(e, ModelError::MissingTensor { .. }) && e.to_string().contains("m.gguf"));
}

#[test]
fn output_weight_unties_and_q_bias_means_attention_bias() {
    let mut rng = Rng::new(2);
    let w = tiny_model("qwen2", &mut rng)
        .f32_tensor("output.weight", &[8, 16], &[0.5; 128])
        .f32_tensor("blk.0.attn_q.bias", &[8], &[0.25; 8])
        .f32_tensor("blk.0.attn_k.bias", &[4], &[0.25; 4]);
    let m = model(&w).unwrap();
    assert_eq!(m.config().architecture, Architecture::Qwen2);
    assert!(!m.config().tie_word_embeddings && m.config().attention_bias);
    assert_eq!(dense(m.weight("lm_head.weight").unwrap()).1, vec![0.5; 128]);
    assert_eq!(
        dense(m.weight("model.layers.0.self_attn.k_proj.bias").unwrap()).0,
        vec![4]
    );
}

/// llama.cpp's converter: `w.reshape(n_head, 2, head_dim / 2, K).swapaxes(1, 2)` on the rows.
fn converter_permute<T: Copy>(rows: &[Vec<T>], n_head: usize) -> Vec<Vec<T>> {
    let half = rows.len() / n_head / 2;
    let mut out = Vec::new();
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                out.push(rows[h * 2 * half + j * half + i].clone());
            }
        }
    }
    out
}

/// A (rows x cols) matrix whose entry says where it is, as HF rows.
fn labelled(rows: usize, cols: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|r| (0..cols).map(|c| (r * 100 + c) as f32).collect())
        .collect()
}

fn f32_bytes(rows: &[Vec<f32>]) -> Vec<u8> {
    rows.iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

#[test]
fn llama_q_and_k_are_unpermuted_to_hugging_face_order() {
    let mut rng = Rng::new(3);
    let (q, k) = (labelled(8, 8), labelled(4, 8));
    let qb: Vec<Vec<f32>> = (0..8).map(|r| vec![r as f32]).collect();
    for arch in ["llama", "mistral", "qwen2", "qwen3"] {
        let mut w = tiny_model(arch, &mut rng);
        w = set_tensor(
            w,
            "blk.1.attn_q.weight",
            &[8, 8],
            ty::F32,
            f32_bytes(&converter_permute(&q, 2)),
        );
        w = set_tensor(
            w,
            "blk.1.attn_k.weight",
            &[8, 4],
            ty::F32,
            f32_bytes(&converter_permute(&k, 1)),
        );
        w = w.tensor(
            "blk.1.attn_q.bias",
            &[8],
            ty::F32,
            f32_bytes(&converter_permute(&qb, 2)),
        );
        let m = model(&w).unwrap();
        let got_q = dense(m.weight("model.layers.1.self_attn.q_proj.weight").unwrap());
        let got_k = dense(m.weight("model.layers.1.self_attn.k_proj.weight").unwrap());
        let got_b = dense(m.weight("model.layers.1.self_attn.q_proj.bias").unwrap());
        // Only llama (and mistral) files are permuted by the converter.
        if matches!(arch, "llama" | "mistral") {
            assert_eq!(got_q, (vec![8, 8], q.concat()), "{arch} q");
            assert_eq!(got_k, (vec![4, 8], k.concat()), "{arch} k");
            assert_eq!(got_b.1, qb.concat(), "{arch} bias");
        } else {
            assert_eq!(
                got_q.1,
                converter_permute(&q, 2).concat(),
                "{arch} q as stored"
            );
            assert_eq!(
                got_k.1,
                converter_permute(&k, 1).concat(),
                "{arch} k as stored"
            );
        }
    }
}

/// A llama file with 32-wide rows so q and k can be Q8_0 / Q4_1.
fn wide_llama(q_data: Vec<u8>, q_type: u32, k_data: Vec<u8>, k_type: u32) -> Writer {
    let mut w = Writer::default();
    for (k, v) in [
        ("general.architecture", Val::str("llama")),
        ("llama.block_count", Val::U32(1)),
        ("llama.context_length", Val::U32(64)),
        ("llama.embedding_length", Val::U32(32)),
        ("llama.feed_forward_length", Val::U32(64)),
        ("llama.attention.head_count", Val::U32(4)),
        ("llama.attention.head_count_kv", Val::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-6)),
    ] {
        w = w.kv(k, v);
    }
    w.f32_tensor("token_embd.weight", &[32, 4], &[0.0; 128])
        .tensor("blk.0.attn_q.weight", &[32, 32], q_type, q_data)
        .tensor("blk.0.attn_k.weight", &[32, 16], k_type, k_data)
}

#[test]
fn quantized_q_and_k_are_unpermuted_without_loss() {
    let mut rng = Rng::new(4);
    for (t, format) in [
        (ty::Q8_0, Format::Int8),
        (ty::Q4_1, Format::Int4Affine),
        (ty::Q4_0, Format::Int4),
    ] {
        // HF rows, each one block of random codes and scales; the file holds them permuted.
        let q_rows: Vec<Vec<u8>> = (0..32)
            .map(|_| gguf_writer::random_blocks(t, 1, &mut rng))
            .collect();
        let k_rows: Vec<Vec<u8>> = (0..16)
            .map(|_| gguf_writer::random_blocks(t, 1, &mut rng))
            .collect();
        let w = wide_llama(
            converter_permute(&q_rows, 4).concat(),
            t,
            converter_permute(&k_rows, 2).concat(),
            t,
        );
        let m = model(&w).unwrap();
        let hf_order = |rows: &[Vec<u8>], n: u64| {
            let f = Writer::default()
                .tensor("x", &[32, n], t, rows.concat())
                .build();
            GgufFile::from_bytes("x.gguf", f)
                .unwrap()
                .weight("x")
                .unwrap()
        };
        for (name, rows, n) in [("q_proj", &q_rows, 32), ("k_proj", &k_rows, 16)] {
            let got = m
                .weight(&format!("model.layers.0.self_attn.{name}.weight"))
                .unwrap();
            let (Weight::Quant(got), Weight::Quant(want)) = (got, hf_order(rows, n)) else {
                panic!("{name} stays quantized")
            };
            assert_eq!(got.format(), format);
            // Codes, scales and biases moved as whole rows: identical matrices.
            assert_eq!(got, want, "type {t} {name}");
        }
    }
}

#[test]
fn qwen3_head_size_from_key_length_and_qk_norms() {
    let mut rng = Rng::new(5);
    let mut w = tiny_model("qwen3", &mut rng).kv("qwen3.attention.key_length", Val::U32(16));
    w = set_tensor(
        w,
        "blk.0.attn_q.weight",
        &[8, 32],
        ty::F32,
        vec![0; 4 * 256],
    );
    w = set_tensor(
        w,
        "blk.0.attn_k.weight",
        &[8, 16],
        ty::F32,
        vec![0; 4 * 128],
    );
    w = set_tensor(
        w,
        "blk.0.attn_v.weight",
        &[8, 16],
        ty::F32,
        vec![0; 4 * 128],
    );
    w = set_tensor(
        w,
        "blk.0.attn_output.weight",
        &[32, 8],
        ty::F32,
        vec![0; 4 * 256],
    );
    w = w
        .f32_tensor("blk.0.attn_q_norm.weight", &[16], &[1.0; 16])
        .f32_tensor("blk.0.attn_k_norm.weight", &[16], &[2.0; 16]);
    let m = model(&w).unwrap();
    assert_eq!(
        (m.config().architecture, m.config().head_dim),
        (Architecture::Qwen3, 16)
    );
    assert_eq!(
        dense(m.weight("model.layers.0.self_attn.k_norm.weight").unwrap()).1,
        vec![2.0; 16]
    );
    assert!(m.contains("model.layers.0.self_attn.q_norm.weight"));
    // Without key_length the head size is embedding / heads = 4, which the tensors contradict.
    let w = without_kv(w, "qwen3.attention.key_length");
    let e = model(&w).unwrap_err();
    assert!(matches!(e, ModelError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("q_proj"), "{e}");
}

#[test]
fn eos_token_ids_include_end_of_turn() {
    let w = tiny_model("llama", &mut Rng::new(6))
        .kv("tokenizer.ggml.eot_token_id", Val::U32(7))
        .kv("tokenizer.ggml.eom_token_id", Val::U32(2));
    assert_eq!(model(&w).unwrap().config().eos_token_ids, vec![2, 7]);
}

fn with_rope_freqs(factors: &[f32]) -> Writer {
    set_kv(
        tiny_model("llama", &mut Rng::new(8)),
        "llama.rope.freq_base",
        Val::F32(500_000.0),
    )
    .f32_tensor("rope_freqs.weight", &[factors.len() as u64], factors)
}

#[test]
fn llama31_rope_scaling_is_recovered_from_rope_freqs() {
    let mut rng = Rng::new(9);
    for (factor, low, high, original) in [
        (8.0, 1.0, 4.0, 8192),
        (32.0, 1.0, 4.0, 8192),
        (8.0, 2.0, 8.0, 8192),
    ] {
        let s = RopeScaling {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: original,
        };
        // Head size 4 has too few frequencies to tell the parameters apart; use 64.
        let w = llama_with_head_dim(64, &mut rng);
        let factors: Vec<f32> = llama3_rope_factors(&s, 500_000.0, 64)
            .iter()
            .map(|&f| f as f32)
            .collect();
        let w = set_kv(w, "llama.rope.freq_base", Val::F32(500_000.0)).f32_tensor(
            "rope_freqs.weight",
            &[32],
            &factors,
        );
        let m = model(&w).unwrap();
        let got = m.config().rope_scaling.expect("rope scaling");
        assert_eq!(
            (got.factor, got.original_max_position_embeddings),
            (factor, original)
        );
        assert!(
            (got.low_freq_factor - low).abs() < 1e-3 && (got.high_freq_factor - high).abs() < 1e-3,
            "{got:?}"
        );
        // rope_freqs has no Hugging Face name.
        assert!(!m.tensor_names().iter().any(|n| n.contains("rope")));
    }
}

/// tiny_model with heads of `head_dim` (set by key_length, hidden size staying 8) and first-layer
/// attention tensors to match.
fn llama_with_head_dim(head_dim: u64, rng: &mut Rng) -> Writer {
    let mut w =
        tiny_model("llama", rng).kv("llama.attention.key_length", Val::U32(head_dim as u32));
    let (h, kv) = (2 * head_dim, head_dim);
    w = set_tensor(
        w,
        "blk.0.attn_q.weight",
        &[8, h],
        ty::F32,
        vec![0; 4 * 8 * h as usize],
    );
    w = set_tensor(
        w,
        "blk.0.attn_k.weight",
        &[8, kv],
        ty::F32,
        vec![0; 4 * 8 * kv as usize],
    );
    w = set_tensor(
        w,
        "blk.0.attn_v.weight",
        &[8, kv],
        ty::F32,
        vec![0; 4 * 8 * kv as usize],
    );
    set_tensor(
        w,
        "blk.0.attn_output.weight",
        &[h, 8],
        ty::F32,
        vec![0; 4 * 8 * h as usize],
    )
}

#[test]
fn rope_scaling_that_is_not_llama3_is_refused() {
    let e = model(&with_rope_freqs(&[1.0, 3.0])).unwrap_err();
    assert!(
        matches!(e, ModelError::Unsupported { .. }) && e.to_string().contains("rope_freqs"),
        "{e}"
    );
    let e = model(&with_rope_freqs(&[1.0, 2.0, 3.0])).unwrap_err();
    assert!(e.to_string().contains("rope_freqs"), "{e}");
    let base = tiny_model("llama", &mut Rng::new(10));
    let yarn = base.clone().kv("llama.rope.scaling.type", Val::str("yarn"));
    let e = model(&yarn).unwrap_err();
    assert!(
        matches!(e, ModelError::Unsupported { .. }) && e.to_string().contains("yarn"),
        "{e}"
    );
    let linear1 = base
        .kv("llama.rope.scaling.type", Val::str("linear"))
        .kv("llama.rope.scaling.factor", Val::F32(1.0));
    assert_eq!(model(&linear1).unwrap().config().rope_scaling, None);
}

#[test]
fn metadata_errors_name_the_key() {
    let base = || tiny_model("llama", &mut Rng::new(11));
    let cases: Vec<(Writer, &str)> = vec![
        (
            set_kv(base(), "general.architecture", Val::str("gpt-neox")),
            "gpt-neox",
        ),
        (
            without_kv(base(), "general.architecture"),
            "general.architecture",
        ),
        (without_kv(base(), "llama.block_count"), "llama.block_count"),
        (
            without_kv(base(), "llama.attention.layer_norm_rms_epsilon"),
            "layer_norm_rms_epsilon",
        ),
        (
            set_kv(base(), "llama.block_count", Val::str("2")),
            "llama.block_count",
        ),
        (
            set_kv(base(), "llama.attention.head_count_kv", Val::U32(3)),
            "cannot share 3",
        ),
        (
            set_kv(base(), "llama.attention.head_count_kv", Val::U32(0)),
            "key-value heads",
        ),
        (
            set_kv(base(), "llama.embedding_length", Val::U32(12)),
            "embed_tokens",
        ),
        (
            set_kv(
                base(),
                "llama.attention.head_count_kv",
                Val::Arr(4, vec![Val::U32(1), Val::U32(2)]),
            ),
            "differs between layers",
        ),
        (
            set_kv(base(), "llama.rope.dimension_count", Val::U32(2)),
            "rotary",
        ),
        (
            set_kv(base(), "llama.context_length", Val::U64(1 << 40)),
            "below 2^32",
        ),
        (
            set_kv(base(), "llama.attention.value_length", Val::U32(8)),
            "value head size",
        ),
        (
            set_kv(base(), "tokenizer.ggml.bos_token_id", Val::I32(-1)),
            "bos_token_id",
        ),
    ];
    for (w, expect) in cases {
        let e = model(&w).unwrap_err().to_string();
        assert!(
            e.contains(expect) && e.contains("m.gguf"),
            "expected {expect:?} in: {e}"
        );
    }
    // Per-layer arrays that agree are read as one value.
    let uniform = set_kv(
        base(),
        "llama.attention.head_count_kv",
        Val::Arr(4, vec![Val::U32(1), Val::U32(1)]),
    );
    assert_eq!(model(&uniform).unwrap().config().num_key_value_heads, 1);
}

#[test]
fn vocab_from_tokenizer_keys() {
    let w = tiny_model("llama", &mut Rng::new(12))
        .kv("tokenizer.chat_template", Val::str("{{ messages }}"))
        .kv("tokenizer.ggml.padding_token_id", Val::U32(3));
    let v = model(&w).unwrap().vocab().unwrap();
    assert_eq!((v.model.as_str(), v.pre.as_str()), ("gpt2", "smollm"));
    assert_eq!((v.tokens.len(), v.tokens[5].as_str()), (16, "t5"));
    assert_eq!(v.token_types, vec![1; 16]);
    assert_eq!(v.merges, vec!["t 1", "t1 0"]);
    assert_eq!(
        (
            v.bos_token_id,
            v.eos_token_id,
            v.padding_token_id,
            v.unknown_token_id
        ),
        (Some(1), Some(2), Some(3), None)
    );
    assert!(!v.add_bos_token && !v.add_space_prefix);
    assert_eq!(v.chat_template.as_deref(), Some("{{ messages }}"));
    // SentencePiece vocabularies add BOS and a space prefix unless the file says otherwise.
    let spm = set_kv(w.clone(), "tokenizer.ggml.model", Val::str("llama"));
    let v = model(&spm).unwrap().vocab().unwrap();
    assert!(v.add_bos_token && v.add_space_prefix);
    let spm = spm.kv("tokenizer.ggml.add_bos_token", Val::Bool(false));
    assert!(!model(&spm).unwrap().vocab().unwrap().add_bos_token);
    // Without types every token is normal.
    let v = model(&without_kv(w.clone(), "tokenizer.ggml.token_type"))
        .unwrap()
        .vocab()
        .unwrap();
    assert_eq!(v.token_types, vec![1; 16]);
}

#[test]
fn vocab_errors() {
    let base = || tiny_model("llama", &mut Rng::new(13));
    let cases: Vec<(Writer, &str)> = vec![
        (
            without_kv(base(), "tokenizer.ggml.model"),
            "tokenizer.ggml.model",
        ),
        (
            without_kv(base(), "tokenizer.ggml.tokens"),
            "tokenizer.ggml.tokens",
        ),
        (
            set_kv(base(), "tokenizer.ggml.tokens", Val::i32s(&[1])),
            "expected strings",
        ),
        (
            set_kv(base(), "tokenizer.ggml.token_type", Val::i32s(&[1; 3])),
            "3 token types for 16 tokens",
        ),
        (
            set_kv(base(), "tokenizer.ggml.token_type", Val::strs(&["a"])),
            "expected i32",
        ),
        (
            set_kv(base(), "tokenizer.ggml.eos_token_id", Val::U32(16)),
            "vocabulary has 16 tokens",
        ),
    ];
    for (w, expect) in cases {
        let e = match model(&w) {
            Ok(m) => m.vocab().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(expect) && e.contains("m.gguf"),
            "expected {expect:?} in: {e}"
        );
    }
}
