//! Reading a checkpoint: config.json with its `quantization_config`, and safetensors files
//! whose tensors are checked, at open and before any weight is read, against the metadata's
//! descriptions and the model's configuration. Quantized matrices come back as the file's
//! bytes, with no repacking.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use marlin_quant::sparse::kept_cols;
use marlin_quant::{Format, QuantMatrix, SparseMatrix};
use serde_json::{Map, Value};

use super::spec::{DenseType, Entry, METADATA_KEY, parse_entry};
use super::{QUANT_METHOD, VERSION};
use crate::hf::{SafetensorsFile, open_weights, parse_config, read_json_file};
use crate::{ModelConfig, ModelError, StoredTensor, Weight, WeightSource};

/// A Metal Marlin checkpoint folder (docs/checkpoint-format.md), mapped.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    config: ModelConfig,
    quantization: Map<String, Value>,
    files: Vec<SafetensorsFile>,
    /// Weight name → (file, how it is stored).
    entries: HashMap<String, (usize, Entry)>,
}

/// Whether `dir` holds a Metal Marlin checkpoint: a config.json whose `quantization_config`
/// says `"quant_method": "metal-marlin"`. Unreadable or malformed files say no here; opening
/// them gives the error.
pub fn is_checkpoint(dir: &Path) -> bool {
    let Ok(bytes) = read_json_file(&dir.join("config.json")) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| {
        v.get("quantization_config")
            .and_then(|q| q.get("quant_method"))
            .and_then(Value::as_str)
            == Some(QUANT_METHOD)
    })
}

impl Checkpoint {
    /// Reads the configuration, maps the weights and checks every tensor.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint, ModelError> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let bad = |what: String| ModelError::Config {
            path: config_path.clone(),
            what,
        };
        let mut json: Map<String, Value> = serde_json::from_slice(&read_json_file(&config_path)?)
            .map_err(|e| bad(format!("not a JSON object: {e}")))?;
        let quantization = match json.remove("quantization_config") {
            Some(Value::Object(q)) => q,
            _ => {
                return Err(bad(
                    "no 'quantization_config' object: not a Metal Marlin checkpoint".into(),
                ));
            }
        };
        check_quantization(&quantization).map_err(bad)?;
        // The rest is the model's own Hugging Face configuration.
        let generation = dir.join("generation_config.json");
        let generation = match generation.is_file() {
            true => Some(read_json_file(&generation)?),
            false => None,
        };
        let plain = serde_json::to_vec(&json).expect("JSON values serialize");
        let config = parse_config(dir, &plain, generation.as_deref())?;
        let (files, _) = open_weights(dir)?;
        let mut entries = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            for (name, entry) in file_entries(file)? {
                if entries.insert(name.clone(), (i, entry)).is_some() {
                    return Err(malformed(
                        file.path(),
                        format!("weight '{name}' is stored twice"),
                    ));
                }
            }
        }
        let checkpoint = Checkpoint {
            dir: dir.to_owned(),
            config,
            quantization,
            files,
            entries,
        };
        checkpoint.check_shapes()?;
        Ok(checkpoint)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `quantization_config` block: how the checkpoint was made.
    pub fn quantization(&self) -> &Map<String, Value> {
        &self.quantization
    }

    /// How a weight is stored.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name).map(|(_, e)| e)
    }

    /// Every weight the configuration implies is present with its shape; nothing else of the
    /// model's is there (a layer beyond `num_hidden_layers` means a mismatched config.json).
    fn check_shapes(&self) -> Result<(), ModelError> {
        let config_json = self.dir.join("config.json");
        let c = &self.config;
        let expected = crate::llama::tensor_shapes(c, 0..c.num_hidden_layers).ok_or_else(|| {
            ModelError::Config {
                path: config_json.clone(),
                what: "the head sizes overflow".into(),
            }
        })?;
        for (name, shape) in &expected {
            match self.entry(name) {
                Some(e) if e.shape() == *shape => {}
                Some(e) => {
                    return Err(ModelError::Shape {
                        path: config_json,
                        name: name.clone(),
                        expected: shape.clone(),
                        got: e.shape(),
                    });
                }
                None => {
                    // Name the weights file (one of them, when sharded): that is where it is not.
                    let path = match self.files.as_slice() {
                        [one] => one.path().to_owned(),
                        _ => self.dir.join("model.safetensors.index.json"),
                    };
                    return Err(ModelError::MissingTensor {
                        path,
                        name: name.clone(),
                    });
                }
            }
        }
        let layer = |n: &str| -> Option<usize> {
            n.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        };
        if let Some(n) = self
            .entries
            .keys()
            .find(|n| layer(n).is_some_and(|l| l >= c.num_hidden_layers))
        {
            return Err(ModelError::Config {
                path: config_json,
                what: format!(
                    "'num_hidden_layers' is {} but the weights hold '{n}': the configuration \
                     belongs to another checkpoint",
                    c.num_hidden_layers
                ),
            });
        }
        Ok(())
    }
}

fn malformed(path: &Path, what: String) -> ModelError {
    ModelError::Malformed {
        path: path.to_owned(),
        format: "Metal Marlin checkpoint",
        what,
    }
}

/// The block must be ours, of a version we read.
fn check_quantization(q: &Map<String, Value>) -> Result<(), String> {
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if method != QUANT_METHOD {
        return Err(format!(
            "quantization_config has quant_method '{method}', not '{QUANT_METHOD}': not a Metal \
             Marlin checkpoint"
        ));
    }
    match q.get("version").and_then(Value::as_u64) {
        Some(v) if v <= VERSION => Ok(()),
        Some(v) => Err(format!(
            "the checkpoint is format version {v}, newer than this build reads ({VERSION}): \
             upgrade Metal Marlin"
        )),
        None => Err("quantization_config has no integer 'version'".into()),
    }
}

/// The weights one file stores: its described matrices, each part's dtype and shape checked,
/// and its dense tensors. A tensor neither described nor dense is an error.
fn file_entries(file: &SafetensorsFile) -> Result<Vec<(String, Entry)>, ModelError> {
    let path = file.path();
    let text = file.metadata(METADATA_KEY).ok_or_else(|| {
        malformed(
            path,
            format!("the safetensors metadata has no '{METADATA_KEY}' entry"),
        )
    })?;
    let described: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        malformed(
            path,
            format!("metadata '{METADATA_KEY}' is not a JSON object: {e}"),
        )
    })?;
    let mut out = Vec::new();
    let mut claimed = std::collections::HashSet::new();
    for (name, desc) in &described {
        let entry = parse_entry(desc)
            .map_err(|e| malformed(path, format!("metadata for '{name}': {e}")))?;
        let what = stored_as(&entry);
        for part in entry.tensors(name) {
            let t = file.tensor(&part.name).ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "'{name}' is described but its tensor '{}' is missing",
                        part.name
                    ),
                )
            })?;
            if (t.dtype, t.shape.as_slice()) != (part.dtype, part.shape.as_slice()) {
                return Err(malformed(
                    path,
                    format!(
                        "tensor '{}' is {} {:?} but a {what} matrix needs {} {:?}",
                        part.name, t.dtype, t.shape, part.dtype, part.shape
                    ),
                ));
            }
            claimed.insert(part.name);
        }
        out.push((name.clone(), entry));
    }
    for t in file.tensors() {
        if claimed.contains(&t.name) {
            continue;
        }
        let Some(dtype) = DenseType::from_name(t.dtype) else {
            return Err(malformed(
                path,
                format!(
                    "tensor '{}' ({}) is neither a dense F32/F16/BF16 tensor nor a part of a \
                     matrix the metadata describes",
                    t.name, t.dtype
                ),
            ));
        };
        out.push((
            t.name.clone(),
            Entry::Dense {
                dtype,
                shape: t.shape.clone(),
            },
        ));
    }
    Ok(out)
}

impl WeightSource for Checkpoint {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let Some((i, entry)) = self.entries.get(name) else {
            return Err(ModelError::MissingTensor {
                path: self.dir.clone(),
                name: name.to_owned(),
            });
        };
        let file = &self.files[*i];
        let (scheme, rows, cols, sparse) = match entry {
            Entry::Dense { .. } => return file.weight(name),
            Entry::Quant { scheme, rows, cols } => (scheme, rows, *cols, false),
            Entry::Sparse { scheme, rows, cols } => (scheme, rows, *cols, true),
        };
        let stored_cols = if sparse { kept_cols(cols) } else { cols };
        let part = |suffix: &str| -> Result<&[u8], ModelError> {
            match file.tensor(&format!("{name}.{suffix}")) {
                Some(t) => file.tensor_data(t),
                None => Ok(&[]),
            }
        };
        let global_scale = match scheme.format() {
            // Its 4 bytes were checked at open; a missing one reads as 0, which from_parts refuses.
            Format::Nvfp4 => part("global_scale")?
                .first_chunk::<4>()
                .map_or(0.0, |b| f32::from_le_bytes(*b)),
            _ => 1.0,
        };
        // One copy of the packed bytes (a weight owns its data); nothing is decoded.
        let owned = |b: &[u8]| Cow::Owned(b.to_vec());
        let bad = |e: marlin_quant::QuantError| malformed(file.path(), format!("'{name}': {e}"));
        let q = QuantMatrix::from_parts(
            *scheme,
            *rows,
            stored_cols,
            owned(part("codes")?),
            owned(part("scales")?),
            owned(part("biases")?),
            global_scale,
        )
        .map_err(bad)?;
        if !sparse {
            return Ok(Weight::Quant(q));
        }
        let s = SparseMatrix::from_parts(q, owned(part("positions")?), cols).map_err(bad)?;
        Ok(Weight::Sparse(s))
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out: Vec<StoredTensor> = self
            .entries
            .iter()
            .map(|(name, (_, entry))| StoredTensor {
                name: name.clone(),
                shape: entry.shape(),
                stored_as: stored_as(entry),
                bytes: entry.bytes(name) as u64,
            })
            .collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

/// How `inspect` and errors name an entry's storage: `F16`, `int4 g32`, `2:4 int4 g32`.
fn stored_as(entry: &Entry) -> String {
    match entry {
        Entry::Dense { dtype, .. } => dtype.name().to_string(),
        Entry::Quant { scheme, .. } => scheme.to_string(),
        Entry::Sparse { scheme, .. } => format!("2:4 {scheme}"),
    }
}
