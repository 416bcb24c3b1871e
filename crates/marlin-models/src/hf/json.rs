//! Typed fields of a Hugging Face folder's JSON files; every error names the file and the
//! field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::ModelError;

/// No configuration or index of a real checkpoint comes near this (a 400B model's index is a
/// few hundred KB); a larger file is a mistake, refused before it is read into memory.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// The bytes of a JSON file of the folder.
pub(crate) fn read_json_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_JSON_BYTES {
        return Err(ModelError::Config {
            path: path.to_owned(),
            what: format!(
                "{len} bytes is too large for a configuration file; is it the right file?"
            ),
        });
    }
    std::fs::read(path).map_err(io)
}

/// The fields of one JSON object: the file's top level, or a dict inside it (`prefix` then
/// names it in errors, e.g. `rope_parameters.`).
pub(crate) struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(path: &'a Path, map: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Fields { path, map, prefix }
    }

    pub(crate) fn path(&self) -> &'a Path {
        self.path
    }

    pub(crate) fn prefix(&self) -> &'a str {
        self.prefix
    }

    /// The field as written, `null` included.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The field, with `null` read as absent (transformers' `None`).
    pub(crate) fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn error(&self, what: String) -> ModelError {
        ModelError::Config {
            path: self.path.to_owned(),
            what,
        }
    }

    /// The field holds the wrong kind of value.
    pub(crate) fn invalid(&self, key: &str, expected: &str) -> ModelError {
        let shown = self.value(key).map_or("null".into(), brief);
        self.error(format!(
            "'{}{key}' is {shown}, expected {expected}",
            self.prefix
        ))
    }

    pub(crate) fn unsupported(&self, what: String, hint: &str) -> ModelError {
        ModelError::Unsupported {
            path: self.path.to_owned(),
            what,
            hint: hint.to_owned(),
        }
    }

    /// A size or count. Sizes past u32 belong to no real model; bounding them here keeps the
    /// products the architecture forms (heads x head size, vocab x hidden) from overflowing.
    pub(crate) fn count(&self, key: &str) -> Result<Option<usize>, ModelError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(Some(n as usize)),
            None => Err(self.invalid(key, "a non-negative integer below 2^32")),
        }
    }

    pub(crate) fn required_count(&self, key: &str) -> Result<usize, ModelError> {
        self.count(key)?.ok_or_else(|| {
            self.error(format!(
                "'{}{key}' is missing; the model's configuration needs it",
                self.prefix
            ))
        })
    }

    /// A positive, finite number (epsilons, rope theta and factors).
    pub(crate) fn positive(&self, key: &str) -> Result<Option<f32>, ModelError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        match v.as_f64().map(|x| x as f32) {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            _ => Err(self.invalid(key, "a positive number")),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.invalid(key, "true or false")),
        }
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<&'a str>, ModelError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(key, "a string")),
        }
    }

    /// A token id or a list of them (`eos_token_id` is either).
    pub(crate) fn token_ids(&self, key: &str) -> Result<Option<Vec<u32>>, ModelError> {
        let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(list)) => list
                .iter()
                .map(id)
                .collect::<Option<Vec<u32>>>()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "a token id or a list of token ids")),
            Some(v) => id(v)
                .map(|i| Some(vec![i]))
                .ok_or_else(|| self.invalid(key, "a token id or a list of token ids")),
        }
    }
}

/// A value as JSON, cut short: errors quote what they refuse without flooding the terminal.
fn brief(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}
