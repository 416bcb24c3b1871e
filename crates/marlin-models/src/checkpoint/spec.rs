//! The checkpoint's vocabulary, shared by the writer and the reader: how a weight is stored
//! (dense in a dtype, or a quantized matrix as its parts), the parts' names, dtypes and shapes,
//! and the per-tensor description in the safetensors metadata (docs/checkpoint-format.md).

use marlin_quant::sparse::{kept_cols, position_row_bytes};
use marlin_quant::{Format, Group, ScaleType, Scheme};
use serde_json::{Map, Value, json};

use super::recipe::group_json;

/// The safetensors `__metadata__` key holding, as a JSON string, `{name: {format, group_size,
/// shape}}` for every quantized matrix of the file.
pub(crate) const METADATA_KEY: &str = "marlin.quantized";

/// A dense tensor's dtype in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseType {
    F32,
    F16,
    BF16,
}

impl DenseType {
    pub fn name(self) -> &'static str {
        match self {
            DenseType::F32 => "F32",
            DenseType::F16 => "F16",
            DenseType::BF16 => "BF16",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            DenseType::F32 => 4,
            DenseType::F16 | DenseType::BF16 => 2,
        }
    }

    /// The dtype of that safetensors name, or of a GGUF type of the same name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "F32" => Some(DenseType::F32),
            "F16" => Some(DenseType::F16),
            "BF16" => Some(DenseType::BF16),
            _ => None,
        }
    }
}

/// How one weight is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dense {
        dtype: DenseType,
        shape: Vec<usize>,
    },
    /// A `rows x cols` matrix in `scheme` (cols is K before padding).
    Quant {
        scheme: Scheme,
        rows: usize,
        cols: usize,
    },
    /// A `rows x cols` 2:4 sparse matrix: its kept values in `scheme` and their positions.
    Sparse {
        scheme: Scheme,
        rows: usize,
        cols: usize,
    },
}

impl Entry {
    /// The weight's shape, as the model sees it.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Entry::Dense { shape, .. } => shape.clone(),
            Entry::Quant { rows, cols, .. } | Entry::Sparse { rows, cols, .. } => {
                vec![*rows, *cols]
            }
        }
    }

    /// The safetensors tensors that store the weight `name`: (name, dtype, shape, bytes).
    pub(crate) fn tensors(&self, name: &str) -> Vec<Part> {
        match self {
            Entry::Dense { dtype, shape } => vec![Part {
                name: name.to_string(),
                dtype: dtype.name(),
                shape: shape.clone(),
                bytes: shape.iter().product::<usize>() * dtype.bytes(),
            }],
            Entry::Quant { scheme, rows, cols } => quant_parts(name, *scheme, *rows, *cols),
            Entry::Sparse { scheme, rows, cols } => {
                let mut parts = quant_parts(name, *scheme, *rows, kept_cols(*cols));
                let row_bytes = position_row_bytes(*cols);
                parts.push(Part {
                    name: format!("{name}.positions"),
                    dtype: "U8",
                    shape: vec![*rows, row_bytes],
                    bytes: rows * row_bytes,
                });
                parts
            }
        }
    }

    /// Bytes of all its tensors.
    pub fn bytes(&self, name: &str) -> usize {
        self.tensors(name).iter().map(|p| p.bytes).sum()
    }
}

/// One safetensors tensor of a stored weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

/// A quantized matrix as safetensors tensors, in `QuantMatrix` layout: `NAME.codes` (U8, one
/// row of packed blocks per output row), `NAME.scales` (the scale type, `(rows, groups)`),
/// `NAME.biases` (F16, affine formats only) and `NAME.global_scale` (F32 `[1]`, NVFP4 only).
fn quant_parts(name: &str, scheme: Scheme, rows: usize, cols: usize) -> Vec<Part> {
    let [codes, scales, biases] = scheme.part_bytes(rows, cols);
    let groups = scheme.groups_per_row(cols);
    let scale_dtype = match scheme.format().scale_type() {
        ScaleType::F16 => "F16",
        ScaleType::F32 => "F32",
        ScaleType::E8M0 => "F8_E8M0",
        ScaleType::E4M3 => "F8_E4M3",
    };
    let part = |suffix: &str, dtype, shape, bytes| Part {
        name: format!("{name}.{suffix}"),
        dtype,
        shape,
        bytes,
    };
    let mut out = vec![
        part(
            "codes",
            "U8",
            vec![rows, scheme.row_code_bytes(cols)],
            codes,
        ),
        part("scales", scale_dtype, vec![rows, groups], scales),
    ];
    if scheme.format().has_bias() {
        out.push(part("biases", "F16", vec![rows, groups], biases));
    }
    if scheme.format() == Format::Nvfp4 {
        out.push(part("global_scale", "F32", vec![1], 4));
    }
    out
}

/// The sparsity a description names: `"2:4"` is the only one.
pub(crate) const SPARSITY_2_4: &str = "2:4";

/// The metadata description of a quantized matrix; a sparse one adds `"sparsity": "2:4"`.
pub(crate) fn describe(scheme: Scheme, rows: usize, cols: usize, sparse: bool) -> Value {
    let mut v = json!({
        "format": scheme.format().name(),
        "group_size": group_json(scheme.group()),
        "shape": [rows, cols],
    });
    if sparse {
        v["sparsity"] = SPARSITY_2_4.into();
    }
    v
}

/// Reads back [`describe`] as the entry it describes; the error says which field is wrong.
pub(crate) fn parse_entry(v: &Value) -> Result<Entry, String> {
    let (scheme, rows, cols) = parse_description(v)?;
    match v.get("sparsity") {
        None | Some(Value::Null) => Ok(Entry::Quant { scheme, rows, cols }),
        Some(Value::String(s)) if s == SPARSITY_2_4 => Ok(Entry::Sparse { scheme, rows, cols }),
        Some(other) => Err(format!(
            "'sparsity' is {other}, but this build reads only \"{SPARSITY_2_4}\" (upgrade Metal \
             Marlin if a newer one wrote it)"
        )),
    }
}

/// The scheme and logical shape of a description.
fn parse_description(v: &Value) -> Result<(Scheme, usize, usize), String> {
    let obj: &Map<String, Value> = v.as_object().ok_or("it is not a JSON object")?;
    let format = obj
        .get("format")
        .and_then(Value::as_str)
        .ok_or("'format' is missing or not a string")?
        .parse::<Format>()
        .map_err(|e| e.to_string())?;
    let group = match obj.get("group_size") {
        Some(Value::String(s)) if s == "channel" => Group::PerChannel,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Group::Size)
            .ok_or("'group_size' is not 16, 32, 64, 128 or \"channel\"")?,
        _ => return Err("'group_size' is missing or not a number or \"channel\"".into()),
    };
    let scheme = Scheme::new(format, group).map_err(|e| e.to_string())?;
    let shape: Vec<usize> = obj
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|d| usize::try_from(d.as_u64()?).ok())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or("'shape' is missing or not a list of non-negative integers")?;
    match shape.as_slice() {
        &[rows, cols] if rows > 0 && cols > 0 => {
            // Sizes of every part must be computable without overflow before anything is
            // compared against the file (padding rounds cols up, so bound it first).
            let fits = cols < 1 << 40
                && rows
                    .checked_mul(scheme.padded_cols(cols).max(cols))
                    .and_then(|n| n.checked_mul(8))
                    .is_some();
            if !fits {
                return Err(format!("shape {shape:?} is too large"));
            }
            Ok((scheme, rows, cols))
        }
        _ => Err(format!(
            "'shape' {shape:?} is not [rows, cols] with both at least 1"
        )),
    }
}
