//! `config.json` (and `generation_config.json`) into a [`ModelConfig`], with the defaults
//! transformers' config classes give a field that is absent: a checkpoint means what
//! transformers makes of it. Every error names config.json and the field.

use std::path::Path;

use serde_json::{Map, Value};

use super::json::{Fields, read_json_file};
use crate::{Architecture, ModelConfig, ModelError, RopeScaling};

/// The `architectures` entries we run, and their `model_type`.
const ARCHITECTURES: [(&str, &str, Architecture); 4] = [
    ("LlamaForCausalLM", "llama", Architecture::Llama),
    ("MistralForCausalLM", "mistral", Architecture::Mistral),
    ("Qwen2ForCausalLM", "qwen2", Architecture::Qwen2),
    ("Qwen3ForCausalLM", "qwen3", Architecture::Qwen3),
];

const SUPPORTED: &str = "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, \
                         Qwen3ForCausalLM (model_type llama, mistral, qwen2, qwen3)";

/// Reads `dir/config.json` and, when present, `dir/generation_config.json`.
pub fn read_config(dir: &Path) -> Result<ModelConfig, ModelError> {
    let config = read_json_file(&dir.join("config.json"))?;
    let generation_path = dir.join("generation_config.json");
    let generation = if generation_path.is_file() {
        Some(read_json_file(&generation_path)?)
    } else {
        None
    };
    parse_config(dir, &config, generation.as_deref())
}

/// The configuration of the model in `dir` (which names the files in errors) from the bytes
/// of its config.json and generation_config.json.
pub fn parse_config(
    dir: &Path,
    config: &[u8],
    generation: Option<&[u8]>,
) -> Result<ModelConfig, ModelError> {
    let path = dir.join("config.json");
    let json = parse_object(&path, config)?;
    let f = Fields::new(&path, &json, "");
    let architecture = architecture(&f)?;
    refuse_unsupported(&f, architecture)?;
    let mut config = sizes(&f, architecture)?;
    (config.rope_theta, config.rope_scaling) = rope(&f, config.max_position_embeddings)?;
    config.sliding_window = sliding_window(&f, architecture, config.num_hidden_layers)?;
    config.attention_bias = match architecture {
        // Qwen2 always has q/k/v biases (its attention is built with bias=True).
        Architecture::Qwen2 => true,
        _ => false,
    };
    // LlamaConfig and MistralConfig default to the ids of Llama 2's vocabulary.
    let default_ids = matches!(architecture, Architecture::Llama | Architecture::Mistral);
    config.bos_token_id = match f.raw("bos_token_id") {
        None if default_ids => Some(1),
        _ => f
            .token_ids("bos_token_id")?
            .and_then(|ids| ids.first().copied()),
    };
    config.eos_token_ids = match f.raw("eos_token_id") {
        None if default_ids => vec![2],
        _ => f.token_ids("eos_token_id")?.unwrap_or_default(),
    };
    if let Some(bytes) = generation {
        add_generation_config(dir, bytes, &mut config)?;
    }
    Ok(config)
}

fn parse_object(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, ModelError> {
    serde_json::from_slice(bytes).map_err(|e| ModelError::Config {
        path: path.to_owned(),
        what: format!("not a JSON object: {e}; the file is damaged or not a model configuration"),
    })
}

/// generation_config.json's end-of-sequence ids join config.json's (transformers stops at
/// either); its BOS is used when config.json names none.
fn add_generation_config(
    dir: &Path,
    bytes: &[u8],
    config: &mut ModelConfig,
) -> Result<(), ModelError> {
    let path = dir.join("generation_config.json");
    let json = parse_object(&path, bytes)?;
    let f = Fields::new(&path, &json, "");
    for id in f.token_ids("eos_token_id")?.unwrap_or_default() {
        if !config.eos_token_ids.contains(&id) {
            config.eos_token_ids.push(id);
        }
    }
    if config.bos_token_id.is_none() {
        config.bos_token_id = f
            .token_ids("bos_token_id")?
            .and_then(|ids| ids.first().copied());
    }
    Ok(())
}

/// `architectures[0]` when present, else `model_type`.
fn architecture(f: &Fields) -> Result<Architecture, ModelError> {
    let unsupported = |what: String| f.unsupported(what, SUPPORTED);
    let first = match f.value("architectures") {
        Some(Value::Array(list)) if list.is_empty() => None,
        Some(Value::Array(list)) => Some(
            list[0]
                .as_str()
                .ok_or_else(|| f.invalid("architectures", "a list of class names"))?,
        ),
        Some(_) => return Err(f.invalid("architectures", "a list of class names")),
        None => None,
    };
    if let Some(class) = first {
        return match ARCHITECTURES.iter().find(|(c, _, _)| *c == class) {
            Some(&(_, _, a)) => Ok(a),
            None => Err(unsupported(format!("architecture '{class}'"))),
        };
    }
    match f.string("model_type")? {
        Some(ty) => match ARCHITECTURES.iter().find(|(_, t, _)| *t == ty) {
            Some(&(_, _, a)) => Ok(a),
            None => Err(unsupported(format!("model_type '{ty}'"))),
        },
        None => Err(f.error(
            "neither 'architectures' nor 'model_type' says which model this is; add \
             \"model_type\" (llama, mistral, qwen2 or qwen3)"
                .into(),
        )),
    }
}

/// What our Llama graph does not compute: refused rather than silently ignored.
fn refuse_unsupported(f: &Fields, architecture: Architecture) -> Result<(), ModelError> {
    if let Some(q) = f.value("quantization_config") {
        let method = q
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(f.unsupported(
            format!("quantized checkpoint (quantization_config, quant_method '{method}')"),
            "GPTQ, AWQ, bitsandbytes and other tools' quantized folders are not read; load the \
             original BF16/F16/F32 checkpoint or a GGUF file (`metal-marlin quantize` makes \
             Metal Marlin's own quantized checkpoint from either)",
        ));
    }
    let act = f.string("hidden_act")?.unwrap_or("silu");
    if act != "silu" {
        return Err(f.unsupported(
            format!("hidden_act '{act}'"),
            "only SwiGLU with silu is implemented",
        ));
    }
    if f.bool("mlp_bias")? == Some(true) {
        return Err(f.unsupported(
            "mlp_bias: true".into(),
            "only bias-free MLPs are implemented",
        ));
    }
    // Llama's and Qwen3's attention_bias puts a bias on o_proj too; our graph has none there.
    let reads_bias = matches!(architecture, Architecture::Llama | Architecture::Qwen3);
    if reads_bias && f.bool("attention_bias")? == Some(true) {
        return Err(f.unsupported(
            "attention_bias: true".into(),
            "biases on q/k/v/o_proj are implemented only for Qwen2 (q/k/v)",
        ));
    }
    Ok(())
}

/// The sizes, with rope and the sliding window left for their own functions.
fn sizes(f: &Fields, architecture: Architecture) -> Result<ModelConfig, ModelError> {
    let hidden_size = f.required_count("hidden_size")?;
    let num_attention_heads = f.required_count("num_attention_heads")?;
    let num_key_value_heads = f
        .count("num_key_value_heads")?
        .unwrap_or(num_attention_heads);
    if num_attention_heads == 0
        || num_key_value_heads == 0
        || !num_attention_heads.is_multiple_of(num_key_value_heads)
    {
        return Err(f.error(format!(
            "{num_attention_heads} attention heads (num_attention_heads) cannot share \
             {num_key_value_heads} key-value heads (num_key_value_heads)"
        )));
    }
    let head_dim = match (architecture, f.raw("head_dim")) {
        // Qwen3Config's own default; null falls back to hidden / heads as its rotary code does.
        (Architecture::Qwen3, None) => 128,
        _ => f
            .count("head_dim")?
            .unwrap_or(hidden_size / num_attention_heads),
    };
    let config = ModelConfig {
        architecture,
        vocab_size: f.required_count("vocab_size")?,
        hidden_size,
        intermediate_size: f.required_count("intermediate_size")?,
        num_hidden_layers: f.required_count("num_hidden_layers")?,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        max_position_embeddings: f.count("max_position_embeddings")?.unwrap_or(
            match architecture {
                Architecture::Llama => 2048,
                Architecture::Mistral => 131_072,
                Architecture::Qwen2 | Architecture::Qwen3 => 32_768,
            },
        ),
        rms_norm_eps: f.positive("rms_norm_eps")?.unwrap_or(1e-6),
        rope_theta: 10_000.0,
        rope_scaling: None,
        tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(false),
        sliding_window: None,
        attention_bias: false,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
    };
    let impossible = [
        ("vocab_size", config.vocab_size),
        ("hidden_size", config.hidden_size),
        ("intermediate_size", config.intermediate_size),
        ("num_hidden_layers", config.num_hidden_layers),
    ];
    if let Some((key, _)) = impossible.iter().find(|(_, v)| *v == 0) {
        return Err(f.error(format!("'{key}' is 0; a model needs at least one")));
    }
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(f.error(format!(
            "head size {head_dim} (head_dim, or hidden_size / num_attention_heads) must be even \
             and positive for rotary embeddings"
        )));
    }
    Ok(config)
}

/// `(rope_theta, rope_scaling)`. transformers 4 wrote `rope_scaling` (null without scaling)
/// beside a top-level `rope_theta`; transformers 5 writes `rope_parameters` holding both. Both
/// shapes are read, with transformers' precedence: `rope_scaling`, then `rope_parameters`; a
/// theta inside the dict, then the top-level one, then 10000.
fn rope(f: &Fields, max_position: usize) -> Result<(f32, Option<RopeScaling>), ModelError> {
    let (key, dict) = match (f.value("rope_scaling"), f.value("rope_parameters")) {
        (Some(v), _) if !is_empty_object(v) => ("rope_scaling", Some(v)),
        (_, Some(v)) => ("rope_parameters", Some(v)),
        _ => ("rope_parameters", None),
    };
    let empty = Map::new();
    let map = match dict {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(f.invalid(key, "an object")),
        None => &empty,
    };
    let prefix = format!("{key}.");
    let p = Fields::new(f.path(), map, &prefix);
    // Per-layer-type parameters ({"full_attention": {...}}) belong to models we do not run.
    if map.values().any(Value::is_object) {
        return Err(f.unsupported(
            format!("'{key}' per layer type"),
            "only one rope for every layer is implemented",
        ));
    }
    let theta = match p.positive("rope_theta")? {
        Some(t) => t,
        None => f.positive("rope_theta")?.unwrap_or(10_000.0),
    };
    for fields in [&p, f] {
        if let Some(r) = fields
            .positive("partial_rotary_factor")?
            .filter(|&r| r != 1.0)
        {
            return Err(f.unsupported(
                format!("partial_rotary_factor {r}"),
                "only rope over the whole head is implemented",
            ));
        }
    }
    let rope_type = match p.string("rope_type")? {
        Some(t) => t,
        None => p.string("type")?.unwrap_or("default"),
    };
    let scaling = match rope_type {
        "default" => None,
        "llama3" => Some(llama3(&p, max_position)?),
        other => {
            return Err(f.unsupported(
                format!("{key} with rope_type '{other}'"),
                "implemented: default and llama3 rope; linear, dynamic, yarn and longrope \
                 scaling are not yet",
            ));
        }
    };
    Ok((theta, scaling))
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

fn llama3(p: &Fields, max_position: usize) -> Result<RopeScaling, ModelError> {
    let required = |k: &str| {
        p.positive(k)?.ok_or_else(|| {
            p.error(format!(
                "'{}{k}' is missing (llama3 rope needs it)",
                p.prefix()
            ))
        })
    };
    let s = RopeScaling {
        factor: required("factor")?,
        low_freq_factor: required("low_freq_factor")?,
        high_freq_factor: required("high_freq_factor")?,
        original_max_position_embeddings: p
            .count("original_max_position_embeddings")?
            .unwrap_or(max_position),
    };
    // The blend between the two bands divides by their difference.
    if s.high_freq_factor <= s.low_freq_factor || s.original_max_position_embeddings == 0 {
        return Err(p.error(format!(
            "llama3 rope needs high_freq_factor > low_freq_factor and a positive \
             original_max_position_embeddings; got {}, {} and {}",
            s.high_freq_factor, s.low_freq_factor, s.original_max_position_embeddings
        )));
    }
    Ok(s)
}

/// Mistral slides every layer; Qwen2 and Qwen3 only layers from `max_window_layers` on, when
/// `use_sliding_window` is set (or as `layer_types` lists): that mix is not implemented, so it
/// is refused unless no layer slides.
fn sliding_window(
    f: &Fields,
    architecture: Architecture,
    layers: usize,
) -> Result<Option<usize>, ModelError> {
    match architecture {
        Architecture::Llama => Ok(None),
        Architecture::Mistral => match f.raw("sliding_window") {
            // MistralConfig's default.
            None => Ok(Some(4096)),
            Some(_) => match f.count("sliding_window")? {
                Some(0) => Err(f.invalid("sliding_window", "a positive number of tokens or null")),
                w => Ok(w),
            },
        },
        Architecture::Qwen2 | Architecture::Qwen3 => {
            if sliding_layers(f, layers)? {
                return Err(f.unsupported(
                    "sliding-window attention on some layers (use_sliding_window / layer_types)"
                        .into(),
                    "only full attention on every layer, or Mistral's window on every layer, is \
                     implemented",
                ));
            }
            Ok(None)
        }
    }
}

/// Whether any layer of a Qwen2/Qwen3 config uses sliding attention, as transformers decides.
fn sliding_layers(f: &Fields, layers: usize) -> Result<bool, ModelError> {
    if let Some(types) = f.value("layer_types") {
        let types = types
            .as_array()
            .and_then(|t| t.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| f.invalid("layer_types", "a list of strings"))?;
        if let Some(t) = types
            .iter()
            .find(|t| !matches!(**t, "full_attention" | "sliding_attention"))
        {
            return Err(f.unsupported(
                format!("layer type '{t}'"),
                "only full_attention is implemented",
            ));
        }
        return Ok(types.contains(&"sliding_attention"));
    }
    let window = match f.raw("sliding_window") {
        None => Some(4096),
        Some(_) => f.count("sliding_window")?,
    };
    let first_sliding = f.count("max_window_layers")?.unwrap_or(28);
    Ok(f.bool("use_sliding_window")? == Some(true) && window.is_some() && first_sliding < layers)
}
