//! A GGUF tensor as a [`Weight`]: Q4_0, Q4_1 and Q8_0 become our INT4, INT4-affine and INT8
//! matrices at group 32 without changing a bit (docs/formats.md, "GGUF and MLX
//! correspondence"); float types and the other quantized types become dense f32.

use marlin_quant::{Format, Group, QuantMatrix, Scheme};

use super::dequant::dequantize;
use super::file::GgufFile;
use super::parse::TensorInfo;
use super::types::{Conversion, GgmlType};
use crate::{DenseTensor, ModelError, Weight};

/// Converts one tensor of `file`.
pub(crate) fn to_weight(file: &GgufFile, info: &TensorInfo) -> Result<Weight, ModelError> {
    let data = file.tensor_data(info)?;
    match info.ggml_type.conversion() {
        Conversion::Lossless => lossless(file, info, data).map(Weight::Quant),
        Conversion::Dense | Conversion::Dequantized => {
            let values = dequantize(info.ggml_type, data).ok_or_else(|| unsupported(file, info))?;
            Ok(Weight::Dense(DenseTensor {
                shape: info.shape(),
                data: values,
            }))
        }
        Conversion::Unsupported => Err(unsupported(file, info)),
    }
}

fn unsupported(file: &GgufFile, info: &TensorInfo) -> ModelError {
    ModelError::Unsupported {
        path: file.path().to_owned(),
        what: format!("tensor type {} (tensor '{}')", info.ggml_type, info.name),
        hint: "supported: F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K; \
               re-quantize the model to one of them"
            .into(),
    }
}

/// Splits GGUF's interleaved blocks (f16 `d`, [f16 `m`,] codes) into our separate codes,
/// scales and biases arrays. Rows are whole numbers of blocks (ne[0] % 32 == 0, checked at
/// open), so the blocks in file order are the (row, group) order of our arrays.
fn lossless(
    file: &GgufFile,
    info: &TensorInfo,
    data: &[u8],
) -> Result<QuantMatrix<'static>, ModelError> {
    let (format, has_m, code_bytes) = match info.ggml_type {
        GgmlType::Q4_0 => (Format::Int4, false, 16),
        GgmlType::Q4_1 => (Format::Int4Affine, true, 16),
        GgmlType::Q8_0 => (Format::Int8, false, 32),
        _ => return Err(unsupported(file, info)),
    };
    let (rows, cols) = matrix_dims(file, info)?;
    let head = if has_m { 4 } else { 2 };
    let n_blocks = data.len() / (head + code_bytes);
    let mut codes = Vec::with_capacity(n_blocks * code_bytes);
    let mut scales = Vec::with_capacity(n_blocks * 2);
    let mut biases = Vec::with_capacity(if has_m { n_blocks * 2 } else { 0 });
    for block in data.chunks_exact(head + code_bytes) {
        scales.extend_from_slice(&block[0..2]);
        if has_m {
            biases.extend_from_slice(&block[2..4]);
        }
        codes.extend_from_slice(&block[head..]);
    }
    let scheme = Scheme::new(format, Group::Size(32))?;
    QuantMatrix::from_vecs(scheme, (rows, cols), codes, scales, biases, 1.0)
        .map_err(|e| file.malformed(format!("tensor '{}': {e}", info.name)))
}

/// `(rows, cols) = (ne[1], ne[0])` of a tensor stored as a matrix; a 1-D tensor is one row.
fn matrix_dims(file: &GgufFile, info: &TensorInfo) -> Result<(usize, usize), ModelError> {
    let shape = info.shape();
    let (rows, cols) = match shape.as_slice() {
        [cols] => (1, *cols),
        [rows, cols] => (*rows, *cols),
        // Trailing dims of 1 (ne[2], ne[3]) are still a matrix.
        [outer @ .., rows, cols] if outer.iter().all(|&d| d == 1) => (*rows, *cols),
        _ => {
            return Err(ModelError::Unsupported {
                path: file.path().to_owned(),
                what: format!(
                    "{}-D quantized tensor '{}' (dims {:?})",
                    shape.len(),
                    info.name,
                    info.dims
                ),
                hint: "only 2-D quantized tensors (linear layers) are loaded".into(),
            });
        }
    };
    if rows == 0 || cols == 0 {
        return Err(file.malformed(format!(
            "tensor '{}' has no elements (dims {:?})",
            info.name, info.dims
        )));
    }
    Ok((rows, cols))
}
