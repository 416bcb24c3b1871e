//! What a model path gives the engine, whatever its kind: the weights, the tokenizer and the
//! chat template, from a GGUF file or from a Hugging Face folder.

use std::path::Path;

use marlin_models::WeightSource;
use marlin_models::gguf::GgufModel;
use serde_json::{Value, json};

use crate::EngineError;
use crate::tokenizer::Tokenizer;

pub(crate) struct Parts {
    pub source: Box<dyn WeightSource>,
    pub tokenizer: Tokenizer,
    /// Jinja source, when the model has one.
    pub chat_template: Option<String>,
}

/// A folder is a Hugging Face model; anything else is read as GGUF.
pub(crate) fn open(path: &Path) -> Result<Parts, EngineError> {
    if path.is_dir() {
        folder(path)
    } else {
        gguf(path)
    }
}

/// A GGUF file embeds its vocabulary and template.
fn gguf(path: &Path) -> Result<Parts, EngineError> {
    let source = GgufModel::open(path)?;
    let vocab = source.vocab()?;
    Ok(Parts {
        tokenizer: Tokenizer::from_vocab(&vocab)?,
        chat_template: vocab.chat_template,
        source: Box::new(source),
    })
}

/// A folder (a Hugging Face model or our checkpoint): config.json and safetensors
/// (marlin-models), tokenizer.json with the special tokens of tokenizer_config.json, and the
/// chat template.
fn folder(dir: &Path) -> Result<Parts, EngineError> {
    let source = marlin_models::open(dir)?;
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.is_file() {
        return Err(EngineError::MissingFile {
            folder: dir.to_owned(),
            file: "tokenizer.json",
            hint: "copy the model's tokenizer.json beside config.json (older folders with only \
                   tokenizer.model or vocab.json are not read)",
        });
    }
    Ok(Parts {
        tokenizer: Tokenizer::from_file(&tokenizer_json)?,
        chat_template: chat_template(dir)?,
        source,
    })
}

/// The tokenizer of the model at `path` (a GGUF file, a Hugging Face folder or one of our
/// checkpoints), as `generate` uses it: for tokenizing text without loading the model (GPTQ's
/// calibration text).
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, EngineError> {
    Ok(open(path)?.tokenizer)
}

/// The files of a folder a converted checkpoint carries over: the tokenizer's, the chat
/// template and the generation defaults. Others (weights, config.json, README) are not.
const CARRIED_FILES: [&str; 9] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// The tokenizer files (name, bytes) a checkpoint made from the model at `path` needs beside
/// it, so it loads with the same tokenizer and chat template: a folder's own files, copied; for
/// a GGUF file, a `tokenizer.json` built from its vocabulary and a `tokenizer_config.json` with
/// its special tokens and chat template.
pub fn tokenizer_files(path: &Path) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
    if path.is_dir() {
        let mut out = Vec::new();
        for name in CARRIED_FILES {
            let file = path.join(name);
            if file.is_file() {
                let bytes = std::fs::read(&file).map_err(|e| EngineError::Invalid {
                    path: file.clone(),
                    what: format!("cannot read it: {e}"),
                })?;
                out.push((name.to_string(), bytes));
            }
        }
        return Ok(out);
    }
    let Parts {
        tokenizer,
        chat_template,
        ..
    } = gguf(path)?;
    let mut config = serde_json::Map::new();
    let entries = [
        ("bos_token", tokenizer.bos_token()),
        ("eos_token", tokenizer.eos_token()),
        ("chat_template", chat_template),
    ];
    // Absent rather than null: readers take a missing key as "none".
    for (key, value) in entries {
        if let Some(v) = value {
            config.insert(key.into(), json!(v));
        }
    }
    Ok(vec![
        ("tokenizer.json".into(), tokenizer.to_json()?.into_bytes()),
        (
            "tokenizer_config.json".into(),
            serde_json::to_vec_pretty(&config).expect("JSON values serialize"),
        ),
    ])
}

/// `chat_template.jinja` (transformers 4.5x and later write it), else tokenizer_config.json's
/// `chat_template`: a string, or a list of `{name, template}` of which "default" is used.
fn chat_template(dir: &Path) -> Result<Option<String>, EngineError> {
    let invalid = |path: &Path, what: String| EngineError::Invalid {
        path: path.to_owned(),
        what,
    };
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| invalid(&jinja, format!("cannot read the chat template: {e}")));
    }
    let config = dir.join("tokenizer_config.json");
    if !config.is_file() {
        return Ok(None);
    }
    // The tokenizer has read this file already, so it is JSON.
    let text = std::fs::read_to_string(&config)
        .map_err(|e| invalid(&config, format!("cannot read it: {e}")))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| invalid(&config, format!("not JSON: {e}")))?;
    match json.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Several named templates: plain chat uses "default" (none: no chat template).
        Some(Value::Array(list)) => Ok(list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(str::to_owned)),
        Some(_) => Err(invalid(
            &config,
            "`chat_template` is neither a string nor a list of {\"name\", \"template\"}; fix \
             the file or delete the key to run without a chat template"
                .into(),
        )),
    }
}
