//! A Hugging Face folder seen as a model: its configuration and its safetensors files, one
//! (`model.safetensors`) or sharded (`model.safetensors.index.json`), mapped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::config::read_config;
use super::json::read_json_file;
use super::safetensors::SafetensorsFile;
use crate::{ModelConfig, ModelError, StoredTensor, Weight, WeightSource};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// A Hugging Face model folder of a supported architecture (llama, mistral, qwen2, qwen3)
/// with F32, F16 or BF16 safetensors weights.
#[derive(Debug)]
pub struct HfModel {
    dir: PathBuf,
    config: ModelConfig,
    files: Vec<SafetensorsFile>,
    /// Tensor name → the file holding it.
    names: HashMap<String, usize>,
}

impl HfModel {
    /// Reads the configuration, maps the weights and checks that they agree.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModel, ModelError> {
        let dir = dir.as_ref();
        if !dir.join("config.json").is_file() {
            return Err(ModelError::MissingFile {
                path: dir.to_owned(),
                file: "config.json".into(),
                hint: "a Hugging Face model folder holds config.json beside its safetensors \
                       files; pass that folder, or a GGUF file"
                    .into(),
            });
        }
        let config = read_config(dir)?;
        let (files, names) = open_weights(dir)?;
        let model = HfModel {
            dir: dir.to_owned(),
            config,
            files,
            names,
        };
        super::check::tensors_match_config(&model)?;
        Ok(model)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, sorted by name.
    pub fn files(&self) -> &[SafetensorsFile] {
        &self.files
    }

    /// The file holding a tensor.
    pub fn file_of(&self, name: &str) -> Option<&SafetensorsFile> {
        self.names.get(name).map(|&i| &self.files[i])
    }

    /// A tensor's shape as stored, without reading it.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        Some(&self.file_of(name)?.tensor(name)?.shape)
    }

    /// The names of the tensors.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }
}

impl WeightSource for HfModel {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        match self.file_of(name) {
            Some(file) => file.weight(name),
            None => Err(ModelError::MissingTensor {
                path: self.dir.clone(),
                name: name.to_owned(),
            }),
        }
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out: Vec<StoredTensor> = self
            .names
            .keys()
            .filter_map(|name| {
                let t = self.file_of(name)?.tensor(name)?;
                Some(StoredTensor {
                    name: name.clone(),
                    shape: t.shape.clone(),
                    stored_as: t.dtype.to_owned(),
                    bytes: t.n_bytes(),
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

pub(crate) type Weights = (Vec<SafetensorsFile>, HashMap<String, usize>);

/// `model.safetensors` when present (transformers looks for it first), else the shards of
/// `model.safetensors.index.json`.
pub(crate) fn open_weights(dir: &Path) -> Result<Weights, ModelError> {
    let single = dir.join(SINGLE);
    if single.is_file() {
        let file = SafetensorsFile::open(&single)?;
        let names = file.tensors().iter().map(|t| (t.name.clone(), 0)).collect();
        return Ok((vec![file], names));
    }
    let index = dir.join(INDEX);
    if index.is_file() {
        return open_shards(dir, &index);
    }
    let pytorch = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
        .iter()
        .any(|f| dir.join(f).is_file());
    Err(ModelError::MissingFile {
        path: dir.to_owned(),
        file: format!("{SINGLE} or {INDEX}"),
        hint: if pytorch {
            "PyTorch .bin weights are not read (unpickling runs code); re-save the model with \
             transformers' save_pretrained, which writes safetensors"
        } else {
            "the folder has configuration but no weights; copy the model's safetensors files \
             beside config.json"
        }
        .into(),
    })
}

/// The shards an index names, each opened once; every tensor it promises must be in its shard.
/// Tensors a shard holds beyond the index are ignored, as transformers ignores them.
fn open_shards(dir: &Path, index: &Path) -> Result<Weights, ModelError> {
    let malformed = |what: String| ModelError::Malformed {
        path: index.to_owned(),
        format: "safetensors index",
        what,
    };
    let json: Map<String, Value> = serde_json::from_slice(&read_json_file(index)?)
        .map_err(|e| malformed(format!("not a JSON object: {e}")))?;
    let weight_map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("it has no 'weight_map' object".into()))?;
    let mut map = Vec::with_capacity(weight_map.len());
    for (tensor, shard) in weight_map {
        let shard = shard
            .as_str()
            .filter(|s| is_plain_file_name(s))
            .ok_or_else(|| {
                malformed(format!(
                    "weight_map maps '{tensor}' to {shard}, which is not a file name in the folder"
                ))
            })?;
        map.push((tensor.as_str(), shard));
    }
    let shard_names: BTreeSet<&str> = map.iter().map(|&(_, s)| s).collect();
    let mut files = Vec::with_capacity(shard_names.len());
    for name in &shard_names {
        let path = dir.join(name);
        let file = match SafetensorsFile::open(&path) {
            Err(ModelError::Io { source, .. }) => {
                return Err(ModelError::Shards {
                    index: index.to_owned(),
                    shard: path,
                    what: format!("the index names the shard, which cannot be read ({source})"),
                });
            }
            other => other?,
        };
        files.push(file);
    }
    let position: HashMap<&str, usize> = shard_names.iter().copied().zip(0..).collect();
    let mut names = HashMap::with_capacity(map.len());
    for (tensor, shard) in map {
        let i = position[shard];
        if files[i].tensor(tensor).is_none() {
            return Err(ModelError::Shards {
                index: index.to_owned(),
                shard: files[i].path().to_owned(),
                what: format!(
                    "the index promises tensor '{tensor}', which the shard does not hold"
                ),
            });
        }
        names.insert(tensor.to_owned(), i);
    }
    Ok((files, names))
}

/// A name that stays inside the folder: an index must not send us to `../` or `/etc`.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        // ':' for Windows drive prefixes (`C:x`), which `is_absolute` does not catch.
        && !name.contains(['/', '\\', ':', '\0'])
        && !Path::new(name).is_absolute()
}
