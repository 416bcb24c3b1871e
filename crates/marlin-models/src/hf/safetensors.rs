//! One safetensors file, mapped: an 8-byte little-endian header length, a JSON header
//! `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
//! tensors' bytes, back to back.
//!
//! We parse the header ourselves rather than with the `safetensors` crate: its 0.8
//! `read_metadata` adds the header length to the last tensor's end without an overflow check,
//! so a crafted header panics (tests/hf_fuzz.rs keeps that file), and its errors name neither
//! the tensor nor the fault. The checks are the format's own: every tensor's bytes are exactly
//! its shape times its dtype, and the tensors tile the data section with no gap or overlap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::mapped::Bytes;
use crate::{DenseTensor, ModelError, Weight};

/// The format's own limit (the reference implementation refuses larger headers): a header
/// holds names and shapes, so 100 MB is thousands of times any real checkpoint's.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Every dtype the safetensors format defines, with its size in bits.
const DTYPES: [(&str, u64); 22] = [
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// One tensor of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsTensor {
    pub name: String,
    /// The format's dtype name (`BF16`, `F8_E4M3`...).
    pub dtype: &'static str,
    /// Outermost first, as PyTorch.
    pub shape: Vec<usize>,
    /// Byte range within the data section (after the header).
    pub data_offsets: (u64, u64),
}

impl SafetensorsTensor {
    pub fn n_bytes(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// A safetensors file whose header was checked against its size when it was opened.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Bytes,
    /// Where the data section starts: 8 + the header length.
    data_start: u64,
    /// In file order (by offset).
    tensors: Vec<SafetensorsTensor>,
    names: HashMap<String, usize>,
    /// The header's `__metadata__`: string keys to string values (other entries are ignored).
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Maps the file and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile, ModelError> {
        let path = path.as_ref();
        Self::parse(path.to_owned(), Bytes::map(path)?)
    }

    /// A file held in memory; `path` names it in errors.
    pub fn from_bytes(
        path: impl Into<PathBuf>,
        bytes: Vec<u8>,
    ) -> Result<SafetensorsFile, ModelError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<SafetensorsFile, ModelError> {
        let (data_start, tensors, metadata) =
            parse_header(bytes.as_slice()).map_err(|fault| match fault {
                Fault::Malformed(what) => ModelError::Malformed {
                    path: path.clone(),
                    format: "safetensors",
                    what,
                },
                Fault::UnknownDtype { tensor, dtype } => ModelError::Unsupported {
                    path: path.clone(),
                    what: format!("dtype '{dtype}' of tensor '{tensor}'"),
                    hint: "it is not a safetensors dtype this build knows; re-save the checkpoint \
                       in BF16, F16 or F32"
                        .into(),
                },
            })?;
        let names = tensors.iter().map(|t| t.name.clone()).zip(0..).collect();
        Ok(SafetensorsFile {
            path,
            bytes,
            data_start,
            tensors,
            names,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The header's tensors, in file order (by offset).
    pub fn tensors(&self) -> &[SafetensorsTensor] {
        &self.tensors
    }

    /// A string of the header's `__metadata__`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    pub fn tensor(&self, name: &str) -> Option<&SafetensorsTensor> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file.
    pub fn tensor_data(&self, t: &SafetensorsTensor) -> Result<&[u8], ModelError> {
        // Extents were checked at open; `get` guards against a tensor from another file.
        let (begin, end) = t.data_offsets;
        let range = self
            .data_start
            .checked_add(begin)
            .zip(self.data_start.checked_add(end));
        range
            .and_then(|(b, e)| {
                self.bytes
                    .as_slice()
                    .get(usize::try_from(b).ok()?..usize::try_from(e).ok()?)
            })
            .ok_or_else(|| ModelError::Malformed {
                path: self.path.clone(),
                format: "safetensors",
                what: format!(
                    "tensor '{}' lies outside the file (is it from another file?)",
                    t.name
                ),
            })
    }

    /// A tensor as dense f32: F32, F16 and BF16 are read (the halves widened exactly); every
    /// other dtype is [`ModelError::Unsupported`].
    pub fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let t = self.tensor(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_owned(),
        })?;
        let bytes = self.tensor_data(t)?;
        let data: Vec<f32> = match t.dtype {
            "F32" => bytes
                .par_chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            "F16" => bytes
                .par_chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            "BF16" => bytes
                .par_chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::Unsupported {
                    path: self.path.clone(),
                    what: format!("dtype {other} of tensor '{name}'"),
                    hint: "supported: F32, F16, BF16; quantized checkpoints of other tools are \
                           not read yet: load the original (unquantized) checkpoint"
                        .into(),
                });
            }
        };
        Ok(Weight::Dense(DenseTensor {
            shape: t.shape.clone(),
            data,
        }))
    }
}

/// Why a header was refused.
#[derive(Debug)]
enum Fault {
    Malformed(String),
    UnknownDtype { tensor: String, dtype: String },
}

fn malformed(what: impl Into<String>) -> Fault {
    Fault::Malformed(what.into())
}

type Header = (u64, Vec<SafetensorsTensor>, HashMap<String, String>);

/// The data section's start, the tensors (every extent checked against `bytes`) and the
/// metadata's strings.
fn parse_header(bytes: &[u8]) -> Result<Header, Fault> {
    let Some(len) = bytes.first_chunk::<8>() else {
        return Err(malformed(format!(
            "{} bytes is too short for the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*len);
    let file_len = bytes.len() as u64;
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(malformed(format!(
            "the header length is {n} bytes but the file has {} after it (the file is cut \
             short, or is not safetensors)",
            file_len - 8
        )));
    }
    let header = &bytes[8..8 + n as usize];
    let text = std::str::from_utf8(header)
        .map_err(|e| malformed(format!("the header is not UTF-8 ({e})")))?;
    // serde_json refuses nesting deeper than 128, so a hostile header cannot exhaust the stack.
    let json: Map<String, Value> = serde_json::from_str(text)
        .map_err(|e| malformed(format!("the header is not a JSON object: {e}")))?;
    let mut tensors = Vec::with_capacity(json.len());
    let mut metadata = HashMap::new();
    for (name, entry) in &json {
        if name == "__metadata__" {
            // The format says string to string; other values are no business of ours.
            if let Some(map) = entry.as_object() {
                metadata.extend(
                    map.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))),
                );
            }
            continue;
        }
        tensors.push(tensor_entry(name, entry)?);
    }
    check_tiling(&mut tensors, file_len - 8 - n)?;
    Ok((8 + n, tensors, metadata))
}

/// One header entry: its dtype known, its shape and offsets non-negative integers, and its
/// byte count equal to the shape times the dtype's size.
fn tensor_entry(name: &str, entry: &Value) -> Result<SafetensorsTensor, Fault> {
    let bad = |what: &str| malformed(format!("tensor '{name}': {what}"));
    let dtype_name = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'dtype' is missing or not a string"))?;
    let Some(&(dtype, bits)) = DTYPES.iter().find(|(d, _)| *d == dtype_name) else {
        return Err(Fault::UnknownDtype {
            tensor: name.to_owned(),
            dtype: dtype_name.to_owned(),
        });
    };
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| {
            dims.iter()
                .map(|d| usize::try_from(d.as_u64()?).ok())
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or_else(|| bad("'shape' is missing or not a list of non-negative integers"))?;
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|o| match o.as_slice() {
            [b, e] => Some((b.as_u64()?, e.as_u64()?)),
            _ => None,
        })
        .ok_or_else(|| bad("'data_offsets' is missing or not [begin, end]"))?;
    if offsets.1 < offsets.0 {
        return Err(bad(&format!(
            "data_offsets {offsets:?} end before they begin"
        )));
    }
    let n_bits = shape
        .iter()
        .try_fold(bits, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| {
            bad(&format!(
                "shape {shape:?} holds more elements than 2^64 bits"
            ))
        })?;
    if n_bits % 8 != 0 || n_bits / 8 != offsets.1 - offsets.0 {
        return Err(bad(&format!(
            "shape {shape:?} of {dtype} needs {n_bits} bits but data_offsets {offsets:?} hold {} \
             bytes",
            offsets.1 - offsets.0
        )));
    }
    Ok(SafetensorsTensor {
        name: name.to_owned(),
        dtype,
        shape,
        data_offsets: offsets,
    })
}

/// The tensors, sorted by offset, must cover `[0, data_len)` exactly: a gap, an overlap or a
/// tail means a damaged file (this is what the reference implementation requires too).
fn check_tiling(tensors: &mut [SafetensorsTensor], data_len: u64) -> Result<(), Fault> {
    tensors.sort_by_key(|t| t.data_offsets);
    let mut at = 0u64;
    for t in tensors.iter() {
        let (begin, end) = t.data_offsets;
        if begin != at {
            let how = if begin < at {
                "overlap the tensor before it"
            } else {
                "leave a gap before it"
            };
            return Err(malformed(format!(
                "tensor '{}': data_offsets [{begin}, {end}] {how} (the previous one ends at {at})",
                t.name
            )));
        }
        if end > data_len {
            return Err(malformed(format!(
                "tensor '{}': data_offsets [{begin}, {end}] reach past the data section's {data_len} \
                 bytes (the file is cut short)",
                t.name
            )));
        }
        at = end;
    }
    if at != data_len {
        return Err(malformed(format!(
            "the tensors end at byte {at} of the data section but the file has {data_len} (extra \
             bytes: the file is damaged)"
        )));
    }
    Ok(())
}
