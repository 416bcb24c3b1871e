//! AWQ (Lin et al., 2023, "AWQ: Activation-aware Weight Quantization"): before rounding, scale
//! each input channel `c` of the matrices that read one input by `s_c = mean|x_c|^alpha`, and
//! divide the operation that produces the input by the same `s_c`, so the product is unchanged
//! and the channels whose activations are large keep more precision. `alpha` is searched per
//! layer and per input on a grid, by the output error the rounded scaled matrices would cause
//! on the calibration inputs.
//!
//! Where `1 / s` goes (the layer's math is unchanged, exactly up to float rounding):
//! - q, k, v read `input_layernorm(x)`: its weight (an RMSNorm's gain) is divided by `s`;
//! - gate, up read `post_attention_layernorm(x)`: its weight is divided by `s`;
//! - down reads `act(gate) * up`: up's rows are divided by `s` (after up's own input scaling);
//! - o reads attention's output, a mix of v's rows across heads (grouped-query attention shares
//!   v's heads), so it is not scaled, as AWQ's reference does when v and o differ in shape.
//!
//! An input is scaled only when the recipe quantizes every matrix that reads it (a kept matrix
//! would need its scaled copy stored). After scaling, each matrix is rounded to nearest with its
//! group ranges searched against the scaled input's energy (`diag(H) / s²`), AWQ's clip search.
//! The error of a candidate is `sum_r d_r H d_r^T` with `d = W - dequant(quant(W s)) / s` over a
//! sample of rows: `H = 2 X^T X / tokens` is the Hessian GPTQ already collects, so the search
//! needs no second pass over the tokens.

use std::collections::HashMap;

use marlin_cpu::dense;
use marlin_quant::{QuantError, Scheme, SparseMatrix, quantize, quantize_weighted};
use rayon::prelude::*;

use super::recipe::{Recipe, Target};
use crate::{DenseTensor, ModelError, Weight, WeightSource};

/// `alpha` tried: 0 (no scaling, plain RTN) to 1 in steps of 0.05, as AWQ's reference grid.
const ALPHAS: usize = 21;

/// Rows of each matrix the search measures: enough for a stable choice of one number, a
/// fraction of the cost of every row (the error is a cols x cols product per row).
const SEARCH_ROWS: usize = 256;

/// One input's statistics over the calibration tokens.
pub(super) struct InputStats<'a> {
    /// `2 X^T X / tokens` (cols x cols).
    pub h: &'a [f64],
    /// `mean |x_c|` per channel.
    pub mean_abs: Vec<f64>,
}

/// A matrix being prepared: its name, f32 weights (rows x cols) and scheme.
pub(super) struct Matrix {
    pub name: String,
    pub rows: usize,
    pub data: Vec<f32>,
    pub scheme: Scheme,
}

impl Matrix {
    fn cols(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }
    /// `W diag(s)`.
    pub fn scale_columns(&mut self, s: &[f32]) {
        for row in self.data.chunks_exact_mut(s.len()) {
            row.iter_mut().zip(s).for_each(|(w, s)| *w *= s);
        }
    }
    /// `diag(1 / s) W`.
    pub fn divide_rows(&mut self, s: &[f32]) {
        let cols = self.cols();
        for (row, s) in self.data.chunks_exact_mut(cols).zip(s) {
            row.iter_mut().for_each(|w| *w /= s);
        }
    }
}

/// The per-channel scales of the best `alpha` for the matrices that read one input (all of the
/// same width), searched as the module docs say. `alpha = 0` (all ones) is a candidate, so the
/// result never measures worse than plain rounding.
// stats over cols, matrices (rows_i, cols) -> s (cols)
pub(super) fn search_scales(stats: &InputStats<'_>, matrices: &[&Matrix]) -> Vec<f32> {
    let cols = stats.mean_abs.len();
    let h32: Vec<f32> = stats.h.iter().map(|&v| v as f32).collect();
    let samples: Vec<(Vec<f32>, usize, Scheme)> = matrices
        .iter()
        .map(|m| {
            let step = m.rows.div_ceil(SEARCH_ROWS).max(1);
            let rows: Vec<f32> = m
                .data
                .chunks_exact(cols)
                .step_by(step)
                .flatten()
                .copied()
                .collect();
            let n = rows.len() / cols;
            (rows, n, m.scheme)
        })
        .collect();
    let candidates: Vec<(f64, Vec<f32>)> = (0..ALPHAS)
        .into_par_iter()
        .map(|i| {
            let s = scales(&stats.mean_abs, i as f64 / (ALPHAS - 1) as f64);
            let err = samples
                .iter()
                .map(|(w, n, scheme)| output_error(w, *n, cols, &s, *scheme, &h32))
                .sum::<f64>();
            (err, s)
        })
        .collect();
    // The first (smallest alpha) of equal errors: no scaling wins ties.
    candidates
        .into_iter()
        .reduce(|best, c| if c.0 < best.0 { c } else { best })
        .map(|(_, s)| s)
        .unwrap_or_else(|| vec![1.0; cols])
}

/// `mean|x|^alpha`, normalized so that `max * min = 1` (AWQ's reference: the scales straddle 1
/// and the scaled weights keep their magnitude), channels never seen (mean 0) left at 1.
fn scales(mean_abs: &[f64], alpha: f64) -> Vec<f32> {
    let raw: Vec<f64> = mean_abs
        .iter()
        .map(|&m| {
            if m > 0.0 {
                m.powf(alpha).max(1e-4)
            } else {
                1.0
            }
        })
        .collect();
    let (lo, hi) = raw
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    raw.iter().map(|&v| (v / norm) as f32).collect()
}

/// `sum_r d_r H d_r^T`, `d = W - dequant(quant(W diag(s))) diag(1/s)`, for `n` rows.
fn output_error(w: &[f32], n: usize, cols: usize, s: &[f32], scheme: Scheme, h: &[f32]) -> f64 {
    let scaled: Vec<f32> = w
        .chunks_exact(cols)
        .flat_map(|row| row.iter().zip(s).map(|(w, s)| w * s))
        .collect();
    let Ok(q) = quantize(&scaled, n, cols, scheme) else {
        return f64::INFINITY;
    };
    let dq = q.dequantize();
    let d: Vec<f32> = w
        .chunks_exact(cols)
        .zip(dq.chunks_exact(cols))
        .flat_map(|(wr, qr)| wr.iter().zip(qr).zip(s).map(|((w, q), s)| w - q / s))
        .collect();
    let mut dh = vec![0f32; n * cols];
    if dense::matmul_f32(&d, n, h, cols, &mut dh).is_err() {
        return f64::INFINITY;
    }
    d.iter().zip(&dh).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// The matrix rounded to nearest (2:4-pruned first when `sparse`), group ranges searched
/// against `importance` (per column), rows in parallel.
pub(super) fn round(m: &Matrix, importance: &[f32], sparse: bool) -> Result<Weight, QuantError> {
    let cols = m.cols();
    if sparse {
        return SparseMatrix::prune_rtn(&m.data, m.rows, cols, m.scheme).map(Weight::Sparse);
    }
    const ROWS_PER_TASK: usize = 64;
    if m.scheme.format() == marlin_quant::Format::Nvfp4 {
        // NVFP4's global scale spans the whole tensor: one call.
        return quantize_weighted(&m.data, m.rows, cols, m.scheme, importance).map(Weight::Quant);
    }
    let parts = m
        .data
        .par_chunks(ROWS_PER_TASK * cols)
        .map(|c| quantize_weighted(c, c.len() / cols, cols, m.scheme, importance))
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<_> = parts.iter().collect();
    Ok(Weight::Quant(
        marlin_quant::QuantMatrix::concat_rows(&refs).expect("blocks of one matrix agree"),
    ))
}

/// A norm's gain divided by the scales of the input it produces.
pub(super) fn divided_norm(
    out: &mut HashMap<String, Weight>,
    name: String,
    gain: Vec<f32>,
    s: &[f32],
) {
    let data: Vec<f32> = gain.iter().zip(s).map(|(g, s)| g / s).collect();
    let shape = vec![data.len()];
    out.insert(name, Weight::Dense(DenseTensor { shape, data }));
}

/// `diag(H) / s²`: the energy of each input of the scaled matrix.
pub(super) fn importance(h: &[f64], s: &[f32]) -> Vec<f32> {
    let cols = s.len();
    (0..cols)
        .map(|c| (h[c * cols + c] / (s[c] as f64).powi(2)) as f32)
        .collect()
}

/// AWQ on decoder layer `l`: `stats` are its four inputs' statistics in
/// `gptq::PRODUCTS` order (q|k|v, o, gate|up, down). Fills `out` with the layer's quantized
/// matrices and the norms whose gains changed.
pub(super) fn quantize_layer(
    src: &dyn WeightSource,
    recipe: &Recipe,
    l: usize,
    stats: &[InputStats<'_>],
    out: &mut HashMap<String, Weight>,
) -> Result<(), ModelError> {
    let p = format!("model.layers.{l}");
    let names = [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ];
    // Every matrix of the layer the recipe quantizes, as f32; None for kept ones.
    let mut m: Vec<Option<Matrix>> = Vec::with_capacity(names.len());
    for n in names {
        let name = format!("{p}.{n}.weight");
        let w = src.weight(&name)?;
        m.push(match recipe.target(&name, &w.shape()) {
            Target::Quant(scheme) => {
                let t = super::quantize::dense(w);
                Some(Matrix {
                    name,
                    rows: t.shape[0],
                    data: t.data,
                    scheme,
                })
            }
            Target::Keep => None,
        });
    }
    if stats.len() != 4 {
        return Err(ModelError::Config {
            path: src.path().to_owned(),
            what: format!(
                "AWQ expected 4 product inputs in layer {l}, saw {}",
                stats.len()
            ),
        });
    }
    let mut s_of: Vec<Option<Vec<f32>>> = vec![None; 4];
    // q|k|v and gate|up: their norm takes 1 / s.
    for (input, idx, norm) in [
        (0, &[0, 1, 2][..], "input_layernorm"),
        (2, &[4, 5][..], "post_attention_layernorm"),
    ] {
        let group: Option<Vec<&Matrix>> = idx.iter().map(|&i| m[i].as_ref()).collect();
        let Some(group) = group else { continue };
        let s = search_scales(&stats[input], &group);
        let norm = format!("{p}.{norm}.weight");
        let gain = super::quantize::dense(src.weight(&norm)?).data;
        divided_norm(out, norm, gain, &s);
        idx.iter()
            .for_each(|&i| m[i].as_mut().expect("checked").scale_columns(&s));
        s_of[input] = Some(s);
    }
    // down: up's rows take 1 / s.
    if let (Some(down), Some(_)) = (&m[6], &m[5]) {
        let s = search_scales(&stats[3], &[down]);
        m[6].as_mut().expect("checked").scale_columns(&s);
        m[5].as_mut().expect("checked").divide_rows(&s);
        s_of[3] = Some(s);
    }
    let input_of = [0, 0, 0, 1, 2, 2, 3];
    for (i, mat) in m.into_iter().enumerate() {
        let Some(mat) = mat else { continue };
        let st = &stats[input_of[i]];
        let ones = vec![1f32; st.mean_abs.len()];
        let s = s_of[input_of[i]].as_deref().unwrap_or(&ones);
        let w = round(&mat, &importance(st.h, s), recipe.sparse_2_4).map_err(|e| {
            ModelError::Quantize {
                path: src.path().to_owned(),
                name: mat.name.clone(),
                source: e,
            }
        })?;
        out.insert(mat.name, w);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use marlin_quant::Format;

    #[test]
    fn scales_straddle_one_and_alpha_zero_is_identity() {
        let m = [0.01, 1.0, 4.0, 0.0];
        assert_eq!(scales(&m, 0.0), vec![1.0; 4]);
        let s = scales(&m, 1.0);
        let (lo, hi) = (0.01f64 / 0.2, 4.0 / 0.2);
        assert!(
            (s[0] as f64 - lo).abs() < 1e-6 && (s[2] as f64 - hi).abs() < 1e-4,
            "{s:?}"
        );
        assert_eq!(s[3], 1.0 / 0.2);
    }

    /// Inputs with a few loud channels: the search scales them up and cuts the output error
    /// against plain rounding (alpha 0).
    #[test]
    fn search_beats_plain_rounding_on_outlier_channels() {
        let cols = 64;
        let mut mean_abs = vec![0.1f64; cols];
        for c in [3, 17, 40] {
            mean_abs[c] = 10.0;
        }
        // A diagonal Hessian whose energy follows the channels' size.
        let mut h = vec![0f64; cols * cols];
        (0..cols).for_each(|c| h[c * cols + c] = mean_abs[c] * mean_abs[c]);
        let w = marlin_testkit::rng::gaussian(9, 32 * cols, 0.05);
        let m = Matrix {
            name: "w".into(),
            rows: 32,
            data: w.clone(),
            scheme: Scheme::of(Format::Int3),
        };
        let stats = InputStats {
            h: &h,
            mean_abs: mean_abs.clone(),
        };
        let s = search_scales(&stats, &[&m]);
        assert!(s[3] > s[0], "{s:?}");
        let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
        let plain = output_error(&w, 32, cols, &vec![1.0; cols], m.scheme, &h32);
        let scaled = output_error(&w, 32, cols, &s, m.scheme, &h32);
        assert!(scaled < 0.8 * plain, "{scaled} vs {plain}");
    }
}
