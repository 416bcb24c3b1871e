//! A GGUF file seen as a model: Hugging Face configuration and tensor names, weights converted
//! on demand from the map.

use std::collections::HashMap;
use std::path::Path;

use super::file::GgufFile;
use super::permute::{gather_rows, source_rows};
use super::translate::{config, hf_name};
use super::vocab::read_vocab;
use crate::{Architecture, FileVocab, ModelConfig, ModelError, StoredTensor, Weight, WeightSource};

/// A GGUF model of a supported architecture (llama, mistral, qwen2, qwen3).
#[derive(Debug)]
pub struct GgufModel {
    file: GgufFile,
    config: ModelConfig,
    /// Hugging Face name → GGUF name, for every tensor that has one.
    names: HashMap<String, String>,
}

impl GgufModel {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufModel, ModelError> {
        Self::from_file(GgufFile::open(path)?)
    }

    /// Translates an opened file's configuration and tensor names.
    pub fn from_file(file: GgufFile) -> Result<GgufModel, ModelError> {
        let config = config(&file)?;
        let names = file
            .tensors()
            .iter()
            .filter_map(|t| Some((hf_name(&t.name)?, t.name.clone())))
            .collect();
        Ok(GgufModel {
            file,
            config,
            names,
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The Hugging Face names of the tensors, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.names.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The GGUF name behind a Hugging Face name, if the file has that tensor.
    pub fn gguf_name(&self, hf: &str) -> Option<&str> {
        self.names.get(hf).map(String::as_str)
    }

    /// The tokenizer the file embeds.
    pub fn vocab(&self) -> Result<FileVocab, ModelError> {
        read_vocab(&self.file)
    }

    /// For q_proj and k_proj of an architecture llama.cpp permutes, the number of heads to
    /// un-permute by.
    fn permuted_heads(&self, hf: &str) -> Option<usize> {
        if !matches!(
            self.config.architecture,
            Architecture::Llama | Architecture::Mistral
        ) {
            return None;
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (_, part) = rest.split_once('.')?;
        match part {
            "self_attn.q_proj.weight" | "self_attn.q_proj.bias" => {
                Some(self.config.num_attention_heads)
            }
            "self_attn.k_proj.weight" | "self_attn.k_proj.bias" => {
                Some(self.config.num_key_value_heads)
            }
            _ => None,
        }
    }
}

impl WeightSource for GgufModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn path(&self) -> &Path {
        self.file.path()
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out: Vec<StoredTensor> = self
            .names
            .iter()
            .filter_map(|(hf, gguf)| {
                let info = self.file.tensor(gguf)?;
                Some(StoredTensor {
                    name: hf.clone(),
                    // GGUF lists the innermost dimension first.
                    shape: info.dims.iter().rev().map(|&d| d as usize).collect(),
                    stored_as: info.ggml_type.to_string(),
                    bytes: info.n_bytes,
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let gguf = self
            .names
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.file.path().to_owned(),
                name: name.to_owned(),
            })?;
        let weight = self.file.weight(gguf)?;
        let Some(heads) = self.permuted_heads(name) else {
            return Ok(weight);
        };
        let rows = weight.shape().first().copied().unwrap_or(0);
        source_rows(rows, heads)
            .and_then(|src| gather_rows(&weight, &src))
            .ok_or_else(|| ModelError::Shape {
                path: self.file.path().to_owned(),
                name: name.to_owned(),
                expected: vec![heads.saturating_mul(self.config.head_dim)],
                got: weight.shape(),
            })
    }
}
