//! The GGUF header, metadata and tensor table, parsed from bytes that may be corrupted.
//!
//! Every count, length and offset read from the file is checked against the bytes that remain
//! before it is used: a count is bounded by the fewest bytes its items could take, so a
//! corrupted count fails with an error instead of reserving gigabytes, and nothing is ever read
//! past the end.

use std::collections::HashMap;

use super::types::GgmlType;
use super::value::{MetadataArray, MetadataValue, ValueType};

/// Why a file could not be parsed; the caller adds the path.
#[derive(Debug)]
pub(crate) enum Fault {
    Malformed(String),
    Unsupported { what: String, hint: String },
}

type Parse<T> = Result<T, Fault>;

fn malformed<T>(what: impl Into<String>) -> Parse<T> {
    Err(Fault::Malformed(what.into()))
}

/// Adds where a fault happened (`key 'x'`, `item 3`) in front of its message.
trait Context<T> {
    fn context(self, f: impl FnOnce() -> String) -> Parse<T>;
}

impl<T> Context<T> for Parse<T> {
    fn context(self, f: impl FnOnce() -> String) -> Parse<T> {
        self.map_err(|e| match e {
            Fault::Malformed(m) => Fault::Malformed(format!("{}: {m}", f())),
            other => other,
        })
    }
}

/// The magic, "GGUF" as bytes.
const MAGIC: [u8; 4] = *b"GGUF";
/// GGML_MAX_DIMS: ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal GGUF; real files nest at most twice. The bound keeps a crafted
/// file (12 bytes per level) from overflowing the stack.
const MAX_NESTING: usize = 16;
/// `general.alignment` when the file does not set it (GGUF_DEFAULT_ALIGNMENT).
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` (ggml's `ne[0]`) is the innermost, contiguous dimension, so a
    /// matrix of `rows x cols` is `[cols, rows]`.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Bytes from the start of the data section (a multiple of the alignment).
    pub offset: u64,
    /// Bytes of data, from the type's block size (checked to lie inside the file).
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked not to overflow when the table was parsed.
        self.dims.iter().product()
    }

    /// The shape outermost first, as PyTorch and [`DenseTensor`](crate::DenseTensor) write it.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim is at most the file size in elements, so it fits in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Everything before the tensor data.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// Reads little-endian values from a byte slice, never past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Parse<&'a [u8]> {
        if n > self.remaining() {
            return malformed(format!(
                "needs {n} bytes at offset {} but the file ends at {} (truncated? download it again)",
                self.pos,
                self.bytes.len()
            ));
        }
        // n <= remaining, which fits in usize.
        let out = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Parse<[u8; N]> {
        let b = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self) -> Parse<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Parse<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A count of items that take at least `min_bytes` each, checked against what remains.
    fn count(&mut self, min_bytes: u64, what: &str) -> Parse<usize> {
        let n = self.u64()?;
        check_count(n, min_bytes, self.remaining(), what)
    }

    fn string(&mut self) -> Parse<String> {
        let len = self.u64()?;
        let remaining = self.remaining();
        if len > remaining {
            return malformed(format!(
                "string of {len} bytes at offset {} but only {remaining} bytes remain (truncated?)",
                self.pos - 8
            ));
        }
        let at = self.pos;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => malformed(format!("string at offset {at} is not UTF-8 ({e})")),
        }
    }

    fn value_type(&mut self) -> Parse<ValueType> {
        let at = self.pos;
        let id = self.u32()?;
        ValueType::from_id(id).map_or_else(
            || {
                malformed(format!(
                    "unknown value type {id} at offset {at} (GGUF defines 0..=12)"
                ))
            },
            Ok,
        )
    }

    fn value(&mut self, t: ValueType, depth: usize) -> Parse<MetadataValue> {
        use MetadataValue as V;
        Ok(match t {
            ValueType::U8 => V::U8(self.array::<1>()?[0]),
            ValueType::I8 => V::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => V::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => V::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => V::U32(self.u32()?),
            ValueType::I32 => V::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => V::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => V::Bool(self.bool()?),
            ValueType::String => V::String(self.string()?),
            ValueType::Array => V::Array(self.metadata_array(depth + 1)?),
            ValueType::U64 => V::U64(self.u64()?),
            ValueType::I64 => V::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => V::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    fn bool(&mut self) -> Parse<bool> {
        let at = self.pos;
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => malformed(format!("bool at offset {at} is {b}, not 0 or 1")),
        }
    }

    /// Fixed-size items decoded from one slice: `N` bytes each.
    fn fixed<T, const N: usize>(&mut self, n: usize, f: fn([u8; N]) -> T) -> Parse<Vec<T>> {
        // count() bounded n * min_bytes (= N) by the remaining bytes.
        let bytes = self.take((n * N) as u64)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect())
    }

    fn metadata_array(&mut self, depth: usize) -> Parse<MetadataArray> {
        use MetadataArray as A;
        if depth > MAX_NESTING {
            return malformed(format!(
                "arrays nested more than {MAX_NESTING} deep at offset {}",
                self.pos
            ));
        }
        let t = self.value_type()?;
        let n = self.count(t.min_bytes(), &format!("{t} array"))?;
        Ok(match t {
            ValueType::U8 => A::U8(self.take(n as u64)?.to_vec()),
            ValueType::I8 => A::I8(self.fixed(n, i8::from_le_bytes)?),
            ValueType::U16 => A::U16(self.fixed(n, u16::from_le_bytes)?),
            ValueType::I16 => A::I16(self.fixed(n, i16::from_le_bytes)?),
            ValueType::U32 => A::U32(self.fixed(n, u32::from_le_bytes)?),
            ValueType::I32 => A::I32(self.fixed(n, i32::from_le_bytes)?),
            ValueType::F32 => A::F32(self.fixed(n, f32::from_le_bytes)?),
            ValueType::U64 => A::U64(self.fixed(n, u64::from_le_bytes)?),
            ValueType::I64 => A::I64(self.fixed(n, i64::from_le_bytes)?),
            ValueType::F64 => A::F64(self.fixed(n, f64::from_le_bytes)?),
            ValueType::Bool => A::Bool(self.items(n, |c| c.bool())?),
            ValueType::String => A::String(self.items(n, |c| c.string())?),
            ValueType::Array => A::Array(self.items(n, |c| c.metadata_array(depth + 1))?),
        })
    }

    fn items<T>(&mut self, n: usize, mut f: impl FnMut(&mut Self) -> Parse<T>) -> Parse<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(f(self).context(|| format!("item {i} of {n}"))?);
        }
        Ok(out)
    }
}

/// Parses everything before the tensor data and checks every tensor's extent against
/// `bytes.len()`.
pub(crate) fn parse_header(bytes: &[u8]) -> Parse<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array().context(|| "reading the magic".into())?;
    check_magic(magic)?;
    let version = check_version(c.u32().context(|| "reading the version".into())?)?;
    // After the version: tensor count, key-value count (u64 each since v2).
    let n_tensors_raw = c.u64().context(|| "reading the tensor count".into())?;
    // Each key-value takes at least 13 bytes: key length (8), value type (4), one byte.
    let n_kv = c.count(13, "metadata key-value")?;
    // Each tensor info takes at least 24 bytes: name length (8), n_dims (4), type (4), offset
    // (8). Checked after the metadata, against what is left then.
    let metadata = parse_metadata(&mut c, n_kv)?;
    let alignment = alignment(&metadata)?;
    let n_tensors = check_count(n_tensors_raw, 24, c.remaining(), "tensor")?;
    let tensors = parse_tensor_infos(&mut c, n_tensors)?;
    let end = c.pos as u64;
    // end <= file length and alignment is a power of two below 2^32: no overflow.
    let data_offset = end.div_ceil(alignment) * alignment;
    check_extents(&tensors, data_offset, alignment, bytes.len() as u64)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn check_magic(magic: [u8; 4]) -> Parse<()> {
    if magic == MAGIC {
        return Ok(());
    }
    // Formats that came before GGUF, read as the little-endian u32 they were written as.
    let legacy = match &magic {
        b"lmgg" => Some("GGML (unversioned)"),
        b"fmgg" => Some("GGMF"),
        b"tjgg" => Some("GGJT"),
        b"algg" => Some("GGLA (LoRA adapter)"),
        _ => None,
    };
    match legacy {
        Some(name) => Err(Fault::Unsupported {
            what: format!("pre-GGUF {name} model file"),
            hint: "convert it to GGUF with a current llama.cpp (convert_llama_ggml_to_gguf.py)"
                .into(),
        }),
        None => malformed(format!(
            "bad magic {:?} ({}); a GGUF file starts with \"GGUF\"",
            String::from_utf8_lossy(&magic),
            hex(&magic)
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_version(version: u32) -> Parse<u32> {
    match version {
        2 | 3 => Ok(version),
        1 => Err(Fault::Unsupported {
            what: "GGUF version 1 (32-bit counts, 2023)".into(),
            hint: "convert the model again with a current llama.cpp".into(),
        }),
        // A big-endian file (GGUF v3 allows them) has its version byte-swapped.
        v if matches!(v.swap_bytes(), 2 | 3) => Err(Fault::Unsupported {
            what: "big-endian GGUF file".into(),
            hint: "use the little-endian version of this model".into(),
        }),
        v => malformed(format!(
            "unknown GGUF version {v}; versions 2 and 3 are supported"
        )),
    }
}

/// A count of items that take at least `min_bytes` each, checked against the bytes that
/// remain; the result fits in usize since `n * min_bytes` fits in the file.
fn check_count(n: u64, min_bytes: u64, remaining: u64, what: &str) -> Parse<usize> {
    if n.checked_mul(min_bytes).is_none_or(|b| b > remaining) {
        return malformed(format!(
            "{what} count {n} cannot fit in the {remaining} bytes left in the file \
             (corrupted or truncated? download it again)"
        ));
    }
    Ok(n as usize)
}

fn parse_metadata(c: &mut Cursor, n_kv: usize) -> Parse<Vec<(String, MetadataValue)>> {
    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = HashMap::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = c
            .string()
            .context(|| format!("metadata key {i} of {n_kv}"))?;
        let value = c
            .value_type()
            .and_then(|t| c.value(t, 0))
            .context(|| format!("metadata key '{key}'"))?;
        if seen.insert(key.clone(), i).is_some() {
            return malformed(format!("metadata key '{key}' appears twice"));
        }
        metadata.push((key, value));
    }
    Ok(metadata)
}

fn alignment(metadata: &[(String, MetadataValue)]) -> Parse<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_u64() {
        Some(a) if a.is_power_of_two() && a <= u32::MAX as u64 => Ok(a),
        _ => malformed(format!(
            "general.alignment is {v} ({}); it must be a power of two that fits in a u32",
            v.value_type()
        )),
    }
}

fn parse_tensor_infos(c: &mut Cursor, n: usize) -> Parse<Vec<TensorInfo>> {
    let mut tensors = Vec::with_capacity(n);
    let mut seen = HashMap::with_capacity(n);
    for i in 0..n {
        let info = tensor_info(c).context(|| match tensors.last() {
            Some(TensorInfo { name, .. }) => format!("tensor info {i} of {n} (after '{name}')"),
            None => format!("tensor info {i} of {n}"),
        })?;
        if seen.insert(info.name.clone(), i).is_some() {
            return malformed(format!("tensor '{}' appears twice", info.name));
        }
        tensors.push(info);
    }
    Ok(tensors)
}

fn tensor_info(c: &mut Cursor) -> Parse<TensorInfo> {
    let name = c.string()?;
    let ctx = |what: &str| format!("tensor '{name}': {what}");
    let n_dims = c.u32().context(|| ctx("reading n_dims"))?;
    if n_dims > MAX_DIMS {
        return malformed(ctx(&format!(
            "{n_dims} dimensions; ggml allows at most {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64().context(|| ctx("reading dims"))?);
    }
    let type_id = c.u32().context(|| ctx("reading the type"))?;
    let Some(ggml_type) = GgmlType::from_id(type_id) else {
        return Err(Fault::Unsupported {
            what: ctx(&format!(
                "ggml type id {type_id}, which this version does not know"
            )),
            hint: "convert the model to a common type (Q4_0, Q4_1, Q8_0, K-quants, F16)".into(),
        });
    };
    let offset = c.u64().context(|| ctx("reading the offset"))?;
    let n_bytes = data_bytes(&dims, ggml_type).map_err(|e| Fault::Malformed(ctx(&e)))?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_bytes,
    })
}

/// Bytes of a tensor's data, or why its shape is impossible.
fn data_bytes(dims: &[u64], t: GgmlType) -> Result<u64, String> {
    let overflow = || format!("dims {dims:?} overflow 64 bits");
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let ne0 = dims.first().copied().unwrap_or(1);
    if !ne0.is_multiple_of(t.block_len()) {
        return Err(format!(
            "innermost dim {ne0} is not a multiple of the {t} block of {}",
            t.block_len()
        ));
    }
    (n / t.block_len())
        .checked_mul(t.block_bytes())
        .ok_or_else(overflow)
}

fn check_extents(tensors: &[TensorInfo], data: u64, alignment: u64, len: u64) -> Parse<()> {
    for t in tensors {
        if !t.offset.is_multiple_of(alignment) {
            return malformed(format!(
                "tensor '{}' starts at data offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            ));
        }
        let end = data
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > len) {
            return malformed(format!(
                "tensor '{}' ({} {:?}, {} bytes at data offset {}) extends past the end of the \
                 file ({len} bytes, data section at {data}); the file is truncated or \
                 corrupted: download it again",
                t.name, t.ggml_type, t.dims, t.n_bytes, t.offset
            ));
        }
    }
    Ok(())
}
