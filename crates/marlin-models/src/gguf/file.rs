//! An open GGUF file: the parsed header over the memory-mapped bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::parse::{Fault, TensorInfo, parse_header};
use super::value::{MetadataArray, MetadataValue};
use crate::mapped::Bytes;
use crate::{ModelError, Weight};

/// A GGUF file (versions 2 and 3): metadata, tensor table, and the tensors' bytes, mapped.
/// Every tensor's extent was checked against the file when it was opened.
pub struct GgufFile {
    path: PathBuf,
    storage: Bytes,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file and parses its header.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, ModelError> {
        let path = path.as_ref();
        Self::parse(path.to_owned(), Bytes::map(path)?)
    }

    /// Parses a GGUF file held in memory; `path` names it in errors.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile, ModelError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Bytes) -> Result<GgufFile, ModelError> {
        let header = match parse_header(storage.as_slice()) {
            Ok(h) => h,
            Err(Fault::Malformed(what)) => {
                return Err(ModelError::Malformed {
                    path,
                    format: "GGUF",
                    what,
                });
            }
            Err(Fault::Unsupported { what, hint }) => {
                return Err(ModelError::Unsupported { path, what, hint });
            }
        };
        let index = |names: Vec<&String>| -> HashMap<String, usize> {
            names.into_iter().cloned().zip(0..).collect()
        };
        Ok(GgufFile {
            keys: index(header.metadata.iter().map(|(k, _)| k).collect()),
            names: index(header.tensors.iter().map(|t| &t.name).collect()),
            path,
            storage,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32 when the file does not set it.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section: the end of the tensor table, aligned.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Total bytes of the file.
    pub fn len(&self) -> u64 {
        self.storage.as_slice().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All key-value pairs, in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// `general.architecture`, if the file sets it as a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(|v| v.as_str())
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        f: impl FnOnce(&'a MetadataValue) -> Option<T>,
    ) -> Result<Option<T>, ModelError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        f(v).map(Some).ok_or_else(|| {
            self.malformed(format!(
                "metadata key '{key}' is {v} ({}), expected {expected}",
                v.value_type()
            ))
        })
    }

    /// An integer key as u64 (any integer type with a non-negative value); an error if the
    /// key holds something else.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, ModelError> {
        self.typed(key, "a non-negative integer", MetadataValue::as_u64)
    }

    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, ModelError> {
        self.typed(key, "an integer", MetadataValue::as_i64)
    }

    /// A float key (f32, f64, or an integer).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, ModelError> {
        self.typed(key, "a number", MetadataValue::as_f32)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, ModelError> {
        self.typed(key, "a bool", MetadataValue::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, ModelError> {
        self.typed(key, "a string", MetadataValue::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&MetadataArray>, ModelError> {
        self.typed(key, "an array", MetadataValue::as_array)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor by its GGUF name (`blk.0.attn_q.weight`).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file.
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8], ModelError> {
        // Extents were checked at open; this guards against an info from another file.
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len() => {
                Ok(&self.storage.as_slice()[s as usize..e as usize])
            }
            _ => Err(self.malformed(format!(
                "tensor '{}' lies outside the file (is it from another file?)",
                info.name
            ))),
        }
    }

    /// A tensor by GGUF name, converted ([`super::convert`]); no renaming or un-permuting.
    pub fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let info = self.tensor(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
        })?;
        super::convert::to_weight(self, info)
    }

    pub(crate) fn malformed(&self, what: String) -> ModelError {
        ModelError::Malformed {
            path: self.path.clone(),
            format: "GGUF",
            what,
        }
    }
}
