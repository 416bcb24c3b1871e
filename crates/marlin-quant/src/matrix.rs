use std::borrow::Cow;

use half::f16;

use crate::codec::{e2m1_decode, e4m3_decode, e8m0_decode};
use crate::layout::{block_bytes, unpack_block};
use crate::{BLOCK, Format, QuantError, ScaleType, Scheme};

/// A quantized weight matrix `W (rows = N, cols = K)`, stored row by row.
///
/// The bytes may be owned (after quantizing) or borrowed (from a memory-mapped checkpoint):
/// `QuantMatrix<'static>` owns them.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix<'a> {
    scheme: Scheme,
    rows: usize,
    cols: usize,
    /// `rows * scheme.row_code_bytes(cols)` bytes: each row's blocks of packed codes.
    codes: Cow<'a, [u8]>,
    /// `rows * groups_per_row` scales, little-endian, of `scheme.format().scale_type()`.
    scales: Cow<'a, [u8]>,
    /// Affine formats: `rows * groups_per_row` little-endian f16 biases; empty otherwise.
    biases: Cow<'a, [u8]>,
    /// NVFP4's per-tensor f32 scale; 1 for every other format.
    global_scale: f32,
}

impl<'a> QuantMatrix<'a> {
    /// Assembles a matrix from its parts, checking every length against the shape.
    pub fn from_parts(
        scheme: Scheme,
        rows: usize,
        cols: usize,
        codes: Cow<'a, [u8]>,
        scales: Cow<'a, [u8]>,
        biases: Cow<'a, [u8]>,
        global_scale: f32,
    ) -> Result<Self, QuantError> {
        if rows == 0 || cols == 0 {
            return Err(QuantError::EmptyShape { rows, cols });
        }
        if !global_scale.is_finite() || global_scale == 0.0 {
            return Err(QuantError::GlobalScale(global_scale));
        }
        let [code_bytes, scale_bytes, bias_bytes] = scheme.part_bytes(rows, cols);
        let expect = [
            ("codes", codes.len(), code_bytes),
            ("scales", scales.len(), scale_bytes),
            ("biases", biases.len(), bias_bytes),
        ];
        for (part, got, expected) in expect {
            if got != expected {
                return Err(QuantError::PartLength {
                    part,
                    scheme: scheme.to_string(),
                    rows,
                    cols,
                    expected,
                    got,
                });
            }
        }
        Ok(QuantMatrix {
            scheme,
            rows,
            cols,
            codes,
            scales,
            biases,
            global_scale,
        })
    }

    /// [`QuantMatrix::from_parts`] with owned parts.
    pub fn from_vecs(
        scheme: Scheme,
        (rows, cols): (usize, usize),
        codes: Vec<u8>,
        scales: Vec<u8>,
        biases: Vec<u8>,
        global_scale: f32,
    ) -> Result<QuantMatrix<'static>, QuantError> {
        let (codes, scales, biases) = (Cow::Owned(codes), Cow::Owned(scales), Cow::Owned(biases));
        QuantMatrix::from_parts(scheme, rows, cols, codes, scales, biases, global_scale)
    }

    /// The rows of `parts` one after another, as one matrix (e.g. q, k and v projections run
    /// as one product). `None` when they differ in scheme, columns or global scale.
    pub fn concat_rows(parts: &[&QuantMatrix<'_>]) -> Option<QuantMatrix<'static>> {
        let first = parts.first()?;
        let same = |m: &&QuantMatrix<'_>| {
            (m.scheme, m.cols, m.global_scale.to_bits())
                == (first.scheme, first.cols, first.global_scale.to_bits())
        };
        if !parts.iter().all(same) {
            return None;
        }
        let (mut codes, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
        for m in parts {
            codes.extend_from_slice(&m.codes);
            scales.extend_from_slice(&m.scales);
            biases.extend_from_slice(&m.biases);
        }
        let rows = parts.iter().map(|m| m.rows).sum();
        QuantMatrix::from_vecs(
            first.scheme,
            (rows, first.cols),
            codes,
            scales,
            biases,
            first.global_scale,
        )
        .ok()
    }

    pub fn into_owned(self) -> QuantMatrix<'static> {
        QuantMatrix {
            codes: Cow::Owned(self.codes.into_owned()),
            scales: Cow::Owned(self.scales.into_owned()),
            biases: Cow::Owned(self.biases.into_owned()),
            ..self
        }
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    pub fn format(&self) -> Format {
        self.scheme.format()
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn padded_cols(&self) -> usize {
        self.scheme.padded_cols(self.cols)
    }
    pub fn group_len(&self) -> usize {
        self.scheme.group_len(self.cols)
    }
    pub fn groups_per_row(&self) -> usize {
        self.scheme.groups_per_row(self.cols)
    }
    pub fn global_scale(&self) -> f32 {
        self.global_scale
    }
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    pub fn scales(&self) -> &[u8] {
        &self.scales
    }
    pub fn biases(&self) -> &[u8] {
        &self.biases
    }

    /// Bytes a kernel reads to use the whole matrix: codes, scales and biases.
    pub fn storage_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() + self.biases.len()
    }

    /// Packed codes of one row.
    pub fn row_codes(&self, row: usize) -> &[u8] {
        let n = self.scheme.row_code_bytes(self.cols);
        &self.codes[row * n..(row + 1) * n]
    }

    /// Decoded scale of group `group` of `row` (NVFP4's global scale folded in).
    pub fn scale(&self, row: usize, group: usize) -> f32 {
        let i = row * self.groups_per_row() + group;
        let s = &self.scales;
        match self.format().scale_type() {
            ScaleType::F16 => f16::from_le_bytes([s[2 * i], s[2 * i + 1]]).to_f32(),
            ScaleType::F32 => {
                f32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]])
            }
            ScaleType::E8M0 => e8m0_decode(s[i]),
            ScaleType::E4M3 => e4m3_decode(s[i]) * self.global_scale,
        }
    }

    /// Bias of group `group` of `row`; 0 for formats without one.
    pub fn bias(&self, row: usize, group: usize) -> f32 {
        if !self.format().has_bias() {
            return 0.0;
        }
        let i = row * self.groups_per_row() + group;
        f16::from_le_bytes([self.biases[2 * i], self.biases[2 * i + 1]]).to_f32()
    }

    /// The specification of every format: decodes row `row` into `out[..cols]`.
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let format = self.format();
        let bits = format.bits();
        let group_len = self.group_len();
        let packed = self.row_codes(row);
        let mut codes = [0u8; BLOCK];
        for (b, chunk) in packed.chunks_exact(block_bytes(bits)).enumerate() {
            unpack_block(bits, chunk, &mut codes);
            for (i, &q) in codes.iter().enumerate() {
                let col = b * BLOCK + i;
                if col >= self.cols {
                    return;
                }
                let g = col / group_len;
                out[col] = value(format, q, self.scale(row, g), self.bias(row, g));
            }
        }
    }

    /// All weights as a row-major `rows * cols` f32 vector.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}

/// The value of code `q` under scale `s` and bias `b`, by format.
pub(crate) fn value(format: Format, q: u8, s: f32, b: f32) -> f32 {
    match format {
        Format::Int4 => s * (q as f32 - 8.0),
        Format::Int4Affine | Format::Int3 | Format::Int2 => s * q as f32 + b,
        Format::Int8 => s * (q as i8) as f32,
        Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 => s * e2m1_decode(q),
        Format::Fp8 => s * e4m3_decode(q),
    }
}
