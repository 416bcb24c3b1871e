//! GGUF → Hugging Face, in one place (DESIGN.md house rule 4): tensor names, and the metadata
//! that becomes a [`ModelConfig`].

use super::file::GgufFile;
use crate::{Architecture, ModelConfig, ModelError, RopeScaling, Weight};

/// Whole-model tensors: (GGUF stem, Hugging Face stem).
const GLOBAL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Per-layer tensors, after `blk.N.` and `model.layers.N.`.
const LAYER: [(&str, &str); 11] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Splits `stem.weight` / `stem.bias`.
fn split_kind(name: &str) -> Option<(&str, &str)> {
    ["weight", "bias"]
        .into_iter()
        .find_map(|kind| Some((name.strip_suffix(kind)?.strip_suffix('.')?, kind)))
}

/// Splits `<prefix>N.<rest>` with N a layer number written canonically (no sign, no leading
/// zero), so one HF name maps to one GGUF name and back.
fn split_layer<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let (n, rest) = name.strip_prefix(prefix)?.split_once('.')?;
    let layer: usize = n.parse().ok()?;
    (layer.to_string() == n).then_some((layer, rest))
}

/// The Hugging Face name of a GGUF tensor (`blk.3.ffn_down.weight` →
/// `model.layers.3.mlp.down_proj.weight`); None for tensors without one (`rope_freqs.weight`).
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, kind) = split_kind(gguf)?;
    if let Some((layer, part)) = split_layer(stem, "blk.") {
        let (_, hf) = LAYER.iter().find(|(g, _)| *g == part)?;
        return Some(format!("model.layers.{layer}.{hf}.{kind}"));
    }
    let (_, hf) = GLOBAL.iter().find(|(g, _)| *g == stem)?;
    Some(format!("{hf}.{kind}"))
}

/// The GGUF name of a Hugging Face tensor name; the inverse of [`hf_name`].
pub fn gguf_name(hf: &str) -> Option<String> {
    let (stem, kind) = split_kind(hf)?;
    if let Some((layer, part)) = split_layer(stem, "model.layers.") {
        let (g, _) = LAYER.iter().find(|(_, h)| *h == part)?;
        return Some(format!("blk.{layer}.{g}.{kind}"));
    }
    let (g, _) = GLOBAL.iter().find(|(_, h)| *h == stem)?;
    Some(format!("{g}.{kind}"))
}

/// The metadata of one architecture, read under its `{arch}.` prefix.
struct Keys<'a> {
    file: &'a GgufFile,
    arch: &'a str,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn missing(&self, key: &str) -> ModelError {
        config_error(self.file, format!("metadata key '{key}' is missing"))
    }

    fn usize(&self, k: &str) -> Result<Option<usize>, ModelError> {
        let key = self.key(k);
        let Some(v) = self.file.get(&key) else {
            return Ok(None);
        };
        // llama.cpp writes some per-layer values as arrays (one per block); ours are uniform.
        let n = match v.as_array() {
            Some(a) => match a.to_i64s().as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Some(*first),
                Some([_, ..]) => {
                    return Err(ModelError::Unsupported {
                        path: self.file.path().to_owned(),
                        what: format!("'{key}' that differs between layers"),
                        hint: "only models whose layers all have the same shape are supported"
                            .into(),
                    });
                }
                _ => None,
            },
            None => v.as_i64(),
        };
        // Sizes past u32 belong to no real model; bounding them here keeps the products the
        // architecture forms (heads x head size, context x head size) far from overflow.
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(Some(n as usize)),
            None => Err(config_error(
                self.file,
                format!(
                    "metadata key '{key}' is {v} ({}), expected a count below 2^32",
                    v.value_type()
                ),
            )),
        }
    }

    fn required(&self, k: &str) -> Result<usize, ModelError> {
        self.usize(k)?.ok_or_else(|| self.missing(&self.key(k)))
    }
}

fn config_error(file: &GgufFile, what: String) -> ModelError {
    ModelError::Config {
        path: file.path().to_owned(),
        what,
    }
}

/// `general.architecture`, as ours and as the prefix of its keys.
fn architecture(file: &GgufFile) -> Result<(Architecture, &str), ModelError> {
    let name = file.get_str("general.architecture")?.ok_or_else(|| {
        config_error(
            file,
            "metadata key 'general.architecture' is missing".into(),
        )
    })?;
    let architecture = match name {
        "llama" => Architecture::Llama,
        "mistral" => Architecture::Mistral,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        other => {
            return Err(ModelError::Unsupported {
                path: file.path().to_owned(),
                what: format!("architecture '{other}'"),
                hint: "supported GGUF architectures: llama, mistral, qwen2, qwen3".into(),
            });
        }
    };
    Ok((architecture, name))
}

/// `(attention heads, key-value heads, head size)`, checked to fit our attention: whole
/// groups of query heads per key-value head, one head size for keys and values, rope over the
/// whole head.
fn heads(keys: &Keys, hidden_size: usize) -> Result<(usize, usize, usize), ModelError> {
    let file = keys.file;
    let num_attention_heads = keys.required("attention.head_count")?;
    let num_key_value_heads = keys
        .usize("attention.head_count_kv")?
        .unwrap_or(num_attention_heads);
    if num_attention_heads == 0
        || num_key_value_heads == 0
        || !num_attention_heads.is_multiple_of(num_key_value_heads)
    {
        return Err(config_error(
            file,
            format!(
                "{num_attention_heads} attention heads cannot share {num_key_value_heads} key-value heads"
            ),
        ));
    }
    // key_length is the head size when it is not embedding / heads (Qwen3); value_length must
    // agree, as our attention has one head size.
    let head_dim = keys
        .usize("attention.key_length")?
        .unwrap_or(hidden_size / num_attention_heads);
    if let Some(v) = keys
        .usize("attention.value_length")?
        .filter(|&v| v != head_dim)
    {
        return Err(ModelError::Unsupported {
            path: file.path().to_owned(),
            what: format!("value head size {v} different from key head size {head_dim}"),
            hint: "only equal key and value head sizes are supported".into(),
        });
    }
    // Partial rotary embeddings (rope on part of each head) are not in our configuration.
    if let Some(d) = keys
        .usize("rope.dimension_count")?
        .filter(|&d| d != head_dim)
    {
        return Err(ModelError::Unsupported {
            path: file.path().to_owned(),
            what: format!("rotary embeddings on {d} of {head_dim} dimensions per head"),
            hint: "only rope over the whole head is supported".into(),
        });
    }
    Ok((num_attention_heads, num_key_value_heads, head_dim))
}

/// The [`ModelConfig`] of a GGUF file, from `general.architecture` and the `{arch}.*` and
/// `tokenizer.ggml.*` keys; checked against the embedding and first layer's tensors.
pub fn config(file: &GgufFile) -> Result<ModelConfig, ModelError> {
    let (architecture, arch) = architecture(file)?;
    let keys = Keys { file, arch };
    let hidden_size = keys.required("embedding_length")?;
    let (num_attention_heads, num_key_value_heads, head_dim) = heads(&keys, hidden_size)?;
    let rope_theta = file
        .get_f32(&keys.key("rope.freq_base"))?
        .unwrap_or(10_000.0);
    let config = ModelConfig {
        architecture,
        vocab_size: vocab_size(file, &keys)?,
        hidden_size,
        intermediate_size: keys.required("feed_forward_length")?,
        num_hidden_layers: keys.required("block_count")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        max_position_embeddings: keys.required("context_length")?,
        rms_norm_eps: file
            .get_f32(&keys.key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| keys.missing(&keys.key("attention.layer_norm_rms_epsilon")))?,
        rope_theta,
        rope_scaling: rope_scaling(file, &keys, head_dim, rope_theta)?,
        // llama.cpp's converter drops lm_head when it is the embedding.
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        sliding_window: keys.usize("attention.sliding_window")?.filter(|&w| w > 0),
        attention_bias: file.tensor("blk.0.attn_q.bias").is_some(),
        bos_token_id: token_id(file, "tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos_token_ids(file)?,
    };
    check_shapes(file, &config)?;
    Ok(config)
}

/// `{arch}.vocab_size`, else the embedding's rows (Hugging Face's `vocab_size`, which may
/// exceed the tokenizer's count), else the tokenizer's token count.
fn vocab_size(file: &GgufFile, keys: &Keys) -> Result<usize, ModelError> {
    if let Some(n) = keys.usize("vocab_size")? {
        return Ok(n);
    }
    if let Some(&[_, rows, ..]) = file.tensor("token_embd.weight").map(|t| t.dims.as_slice()) {
        return Ok(rows as usize);
    }
    match file.get_array("tokenizer.ggml.tokens")? {
        Some(tokens) => Ok(tokens.len()),
        None => Err(keys.missing(&keys.key("vocab_size"))),
    }
}

pub(crate) fn token_id(file: &GgufFile, key: &str) -> Result<Option<u32>, ModelError> {
    match file.get_u64(key)? {
        None => Ok(None),
        Some(id) => u32::try_from(id)
            .map(Some)
            .map_err(|_| config_error(file, format!("'{key}' is {id}, not a token id"))),
    }
}

/// The tokens that end generation: eos, then end-of-turn and end-of-message when the file
/// names them (llama.cpp stops on all three).
fn eos_token_ids(file: &GgufFile) -> Result<Vec<u32>, ModelError> {
    let mut ids = Vec::new();
    for key in ["eos", "eot", "eom"] {
        if let Some(id) = token_id(file, &format!("tokenizer.ggml.{key}_token_id"))?
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Llama 3.1-style rope scaling. llama.cpp's converter does not store its parameters: it
/// stores their effect, `rope_freqs.weight`, one factor per rotary frequency. The factors
/// depend on the parameters only through `factor` and the line `s(freq)` of the smooth region,
/// so they are recovered by fitting that line, and accepted only if they regenerate every
/// stored factor.
fn rope_scaling(
    file: &GgufFile,
    keys: &Keys,
    head_dim: usize,
    theta: f32,
) -> Result<Option<RopeScaling>, ModelError> {
    let type_key = keys.key("rope.scaling.type");
    let factor = file.get_f32(&keys.key("rope.scaling.factor"))?;
    match file.get_str(&type_key)? {
        None | Some("none") => {}
        // A linear factor of 1 changes nothing.
        Some("linear") if factor == Some(1.0) => {}
        Some(other) => {
            return Err(ModelError::Unsupported {
                path: file.path().to_owned(),
                what: format!("rope scaling '{other}' ({type_key})"),
                hint: "Llama 3.1-style scaling (rope_freqs.weight) is supported; linear, yarn and \
                       longrope are not yet"
                    .into(),
            });
        }
    }
    let Some(info) = file.tensor("rope_freqs.weight") else {
        return Ok(None);
    };
    let factors = match file.weight(&info.name)? {
        Weight::Dense(t) if t.data.len() == head_dim / 2 => t.data,
        w => {
            return Err(config_error(
                file,
                format!(
                    "rope_freqs.weight has shape {:?}; head size {head_dim} needs {} factors",
                    w.shape(),
                    head_dim / 2
                ),
            ));
        }
    };
    let original = keys
        .usize("rope.scaling.original_context_length")?
        .unwrap_or(8192);
    let fitted = fit_llama3(&factors, theta, head_dim, original);
    fitted.map(Some).ok_or_else(|| ModelError::Unsupported {
        path: file.path().to_owned(),
        what: "rope_freqs.weight factors that do not follow Llama 3 rope scaling".into(),
        hint: "only Llama 3.1-style rope scaling is supported".into(),
    })
}

/// The factors llama.cpp's converter stores for `scaling` (`generate_extra_tensors` of its
/// Llama model): 1 for short wavelengths, `factor` for long ones, a smooth blend between.
pub fn llama3_rope_factors(scaling: &RopeScaling, theta: f32, head_dim: usize) -> Vec<f64> {
    let original = scaling.original_max_position_embeddings as f64;
    let (low, high) = (
        f64::from(scaling.low_freq_factor),
        f64::from(scaling.high_freq_factor),
    );
    let factor = f64::from(scaling.factor);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / f64::from(theta).powf(2.0 * i as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < original / high {
                1.0
            } else if wavelen > original / low {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Parameters that regenerate `factors` within f32 rounding: the usual Llama 3 low/high
/// factors (1, 4) when they fit, else those fitted to the smooth region.
fn fit_llama3(
    factors: &[f32],
    theta: f32,
    head_dim: usize,
    original: usize,
) -> Option<RopeScaling> {
    let factor = *factors.last()?;
    if !(factor.is_finite() && factor > 1.0) {
        return None;
    }
    let matches = |s: &RopeScaling| {
        let want = llama3_rope_factors(s, theta, head_dim);
        want.iter()
            .zip(factors)
            .all(|(w, &f)| (w - f64::from(f)).abs() <= 1e-4 * w.abs())
    };
    let usual = RopeScaling {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: original,
    };
    if matches(&usual) {
        return Some(usual);
    }
    // In the smooth region 1/r = (1 - s)/factor + s with s = a * freq + b, where
    // a = original / (2 pi (high - low)) and b = -low / (high - low).
    let inv = 1.0 / f64::from(factor);
    let points: Vec<(f64, f64)> = factors
        .iter()
        .enumerate()
        .filter(|&(_, &r)| r > 1.0 + 1e-5 && r < factor * (1.0 - 1e-5))
        .map(|(i, &r)| {
            let freq = 1.0 / f64::from(theta).powf(2.0 * i as f64 / head_dim as f64);
            (freq, (1.0 / f64::from(r) - inv) / (1.0 - inv))
        })
        .collect();
    let (a, b) = least_squares(&points)?;
    let span = original as f64 / (2.0 * std::f64::consts::PI * a);
    let low = -b * span;
    let fitted = RopeScaling {
        low_freq_factor: low as f32,
        high_freq_factor: (low + span) as f32,
        ..usual
    };
    (a > 0.0 && low > 0.0 && matches(&fitted)).then_some(fitted)
}

/// The line `y = a x + b` through at least two points with distinct x.
fn least_squares(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, my - sxy / sxx * mx))
}

/// The configuration must agree with the tensors it describes: the embedding, the output, and
/// the first layer's projections (the architecture checks every layer when it loads them).
fn check_shapes(file: &GgufFile, c: &ModelConfig) -> Result<(), ModelError> {
    let (Some(h), Some(kv)) = (
        c.num_attention_heads.checked_mul(c.head_dim),
        c.num_key_value_heads.checked_mul(c.head_dim),
    ) else {
        return Err(config_error(
            file,
            format!(
                "{} heads of size {} overflow",
                c.num_attention_heads, c.head_dim
            ),
        ));
    };
    let expected = [
        ("token_embd.weight", [c.vocab_size, c.hidden_size]),
        ("output.weight", [c.vocab_size, c.hidden_size]),
        ("blk.0.attn_q.weight", [h, c.hidden_size]),
        ("blk.0.attn_k.weight", [kv, c.hidden_size]),
        ("blk.0.attn_v.weight", [kv, c.hidden_size]),
        ("blk.0.attn_output.weight", [c.hidden_size, h]),
        (
            "blk.0.ffn_gate.weight",
            [c.intermediate_size, c.hidden_size],
        ),
        ("blk.0.ffn_up.weight", [c.intermediate_size, c.hidden_size]),
        (
            "blk.0.ffn_down.weight",
            [c.hidden_size, c.intermediate_size],
        ),
    ];
    for (name, want) in expected {
        let Some(info) = file.tensor(name) else {
            continue;
        };
        let got = info.shape();
        if got != want {
            return Err(ModelError::Shape {
                path: file.path().to_owned(),
                name: hf_name(name).unwrap_or_else(|| name.to_owned()),
                expected: want.to_vec(),
                got,
            });
        }
    }
    if c.head_dim == 0
        || !c.head_dim.is_multiple_of(2)
        || c.num_hidden_layers == 0
        || c.hidden_size == 0
    {
        return Err(config_error(
            file,
            format!(
                "impossible sizes: {} layers, hidden size {}, head size {} (rotary embeddings need \
             an even head size)",
                c.num_hidden_layers, c.hidden_size, c.head_dim
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (g, h) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            (
                "blk.12.attn_k_norm.weight",
                "model.layers.12.self_attn.k_norm.weight",
            ),
            ("blk.0.attn_q.bias", "model.layers.0.self_attn.q_proj.bias"),
        ] {
            assert_eq!(hf_name(g).as_deref(), Some(h));
            assert_eq!(gguf_name(h).as_deref(), Some(g));
        }
        for odd in [
            "rope_freqs.weight",
            "blk.01.attn_q.weight",
            "blk.-1.attn_q.weight",
            "blk.x",
            "",
        ] {
            assert_eq!(hf_name(odd), None, "{odd}");
        }
    }

    #[test]
    fn llama31_factors_fit_back() {
        let s = RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let f: Vec<f32> = llama3_rope_factors(&s, 500_000.0, 128)
            .iter()
            .map(|&x| x as f32)
            .collect();
        assert_eq!(fit_llama3(&f, 500_000.0, 128, 8192), Some(s));
        // Unusual low/high factors come back from the fit.
        let odd = RopeScaling {
            low_freq_factor: 2.0,
            high_freq_factor: 8.0,
            ..s
        };
        let f: Vec<f32> = llama3_rope_factors(&odd, 500_000.0, 128)
            .iter()
            .map(|&x| x as f32)
            .collect();
        let fit = fit_llama3(&f, 500_000.0, 128, 8192).expect("fits");
        assert!(
            (fit.low_freq_factor - 2.0).abs() < 1e-3 && (fit.high_freq_factor - 8.0).abs() < 1e-3,
            "{fit:?}"
        );
    }
}
