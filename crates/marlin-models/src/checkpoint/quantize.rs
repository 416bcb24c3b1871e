//! Quantizing a model into a checkpoint, one weight at a time: read it from the source,
//! quantize it, write it, drop it. Peak memory is about one weight in f32 plus its packed
//! form, never the whole model.

use std::collections::HashMap;
use std::path::Path;

use marlin_quant::{Format, QuantMatrix, Scheme, quantize};
use rayon::prelude::*;
use serde_json::Value;

use super::gptq::{Calibration, Calibrator};
use super::recipe::{Method, Recipe, Target};
use super::spec::{DenseType, Entry};
use super::writer::CheckpointWriter;
use crate::{ModelError, StoredTensor, Weight, WeightSource};

/// Where quantizing stands, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Weights written so far (this one included once `finished`).
    pub done: usize,
    pub total: usize,
    pub name: &'a str,
    /// Decoder layers fully written.
    pub layers_done: usize,
    pub layers: usize,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizeReport {
    /// Weights quantized by the recipe (re-quantized when the source held them quantized).
    pub quantized: usize,
    /// Weights kept as the source stores them.
    pub kept: usize,
    /// Bytes of the weights file's tensors.
    pub weight_bytes: u64,
}

/// Quantizes every weight of `src` by `recipe` into a new checkpoint at `output`, with
/// `extra_files` (tokenizer files: name, bytes) beside it. `progress` is called after each
/// weight. Nothing appears at `output` unless everything succeeds.
pub fn quantize_model(
    src: &dyn WeightSource,
    recipe: &Recipe,
    output: &Path,
    extra_files: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<QuantizeReport, ModelError> {
    quantize_model_calibrated(src, recipe, None, output, extra_files, progress)
}

/// [`quantize_model`] for every method: with `Method::Gptq` the decoder layers' matrices are
/// quantized by GPTQ on `calibration`, layer by layer (checkpoint/gptq.rs), with `Method::Awq`
/// scaled by AWQ and rounded (checkpoint/awq.rs, norms changed too); the matrices outside
/// the decoder layers that the recipe quantizes (an `lm_head` rule) are rounded to nearest.
pub fn quantize_model_calibrated(
    src: &dyn WeightSource,
    recipe: &Recipe,
    calibration: Option<&Calibration>,
    output: &Path,
    extra_files: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(Step<'_>),
) -> Result<QuantizeReport, ModelError> {
    let mut calibrator = match (recipe.method, calibration) {
        (Method::Gptq | Method::Awq, Some(c)) => Some(Calibrator::new(src, c)?),
        (Method::Gptq | Method::Awq, None) => {
            return Err(ModelError::Config {
                path: src.path().to_owned(),
                what: format!(
                    "{} needs calibration samples (give a Calibration)",
                    recipe.method
                ),
            });
        }
        (Method::Rtn, _) => None,
    };
    let mut calibrated: (Option<usize>, HashMap<String, Weight>) = (None, HashMap::new());
    let mut config = super::hf_config::base_config(src)?;
    config.insert("quantization_config".into(), recipe.to_json());
    let tensors = in_layer_order(src.tensors());
    let mut plan = Vec::with_capacity(tensors.len());
    let mut report = QuantizeReport::default();
    for t in &tensors {
        let entry = plan_entry(src, recipe, t)?;
        report.weight_bytes += entry.bytes(&t.name) as u64;
        plan.push((t.name.clone(), entry));
    }
    let layers = src.config().num_hidden_layers;
    let mut writer = CheckpointWriter::create(output, plan.clone())?;
    for (i, (name, entry)) in plan.iter().enumerate() {
        if let (Some(cal), Some(l)) = (calibrator.as_mut(), layer_of(name))
            && calibrated.0 != Some(l)
        {
            calibrated = (Some(l), cal.layer(src, recipe, l)?);
        }
        if let Some(q) = calibrated.1.remove(name) {
            // AWQ also hands back the norms it rescaled: dense, kept.
            match q {
                Weight::Dense(_) => report.kept += 1,
                _ => report.quantized += 1,
            }
            writer.write(name, &q)?;
            progress(step(&plan, i, layers));
            continue;
        }
        let weight = src.weight(name)?;
        let out = match (recipe.target(name, &weight.shape()), entry) {
            (Target::Quant(_), Entry::Quant { scheme, .. }) => {
                report.quantized += 1;
                requantize(weight, *scheme).map_err(|e| in_tensor(src, name, e))?
            }
            (Target::Quant(_), Entry::Sparse { scheme, .. }) => {
                report.quantized += 1;
                prune_rtn(weight, *scheme).map_err(|e| in_tensor(src, name, e))?
            }
            _ => {
                report.kept += 1;
                weight
            }
        };
        writer.write(name, &out)?;
        drop(out);
        progress(step(&plan, i, layers));
    }
    writer.finish(&Value::Object(config), extra_files)?;
    Ok(report)
}

/// Where quantizing stands once weight `i` of `plan` is written.
fn step(plan: &[(String, Entry)], i: usize, layers: usize) -> Step<'_> {
    let next_layer = plan.get(i + 1).and_then(|(n, _)| layer_of(n));
    Step {
        done: i + 1,
        total: plan.len(),
        name: &plan[i].0,
        layers_done: next_layer.map_or(layers, |l| l.min(layers)),
        layers,
    }
}

/// How `t` will be stored. A kept weight keeps the source's dtype (F32, F16, BF16) or packed
/// format; one the source decodes to f32 (GGUF K-quants) is kept as F32, which is exact.
fn plan_entry(
    src: &dyn WeightSource,
    recipe: &Recipe,
    t: &StoredTensor,
) -> Result<Entry, ModelError> {
    match recipe.target(&t.name, &t.shape) {
        Target::Quant(scheme) => match *t.shape.as_slice() {
            [rows, cols] if rows > 0 && cols > 0 && recipe.sparse_2_4 => {
                Ok(Entry::Sparse { scheme, rows, cols })
            }
            [rows, cols] if rows > 0 && cols > 0 => Ok(Entry::Quant { scheme, rows, cols }),
            _ => Err(ModelError::Shape {
                path: src.path().to_owned(),
                name: t.name.clone(),
                expected: vec![1, 1],
                got: t.shape.clone(),
            }),
        },
        Target::Keep => {
            if let Some(dtype) = DenseType::from_name(&t.stored_as) {
                return Ok(Entry::Dense {
                    dtype,
                    shape: t.shape.clone(),
                });
            }
            // Only the weight itself says which of our formats a packed type becomes.
            Ok(match src.weight(&t.name)? {
                Weight::Quant(q) => Entry::Quant {
                    scheme: q.scheme(),
                    rows: q.rows(),
                    cols: q.cols(),
                },
                Weight::Sparse(s) => Entry::Sparse {
                    scheme: s.scheme(),
                    rows: s.rows(),
                    cols: s.cols(),
                },
                Weight::Dense(d) => Entry::Dense {
                    dtype: DenseType::F32,
                    shape: d.shape,
                },
            })
        }
    }
}

/// `w` in `scheme`: copied bit for bit when the source already holds it so (re-rounding
/// could only lose), else decoded to f32 and rounded to nearest.
fn requantize(w: Weight, scheme: Scheme) -> Result<Weight, marlin_quant::QuantError> {
    let t = match w {
        Weight::Quant(q) if q.scheme() == scheme => return Ok(Weight::Quant(q)),
        w => dense(w),
    };
    let (rows, cols) = (t.shape[0], t.data.len() / t.shape[0].max(1));
    Ok(Weight::Quant(quantize_parallel(
        &t.data, rows, cols, scheme,
    )?))
}

/// `w` pruned to 2:4 by magnitude, the kept values rounded to nearest in `scheme` (rows in
/// parallel, as [`quantize_parallel`]).
fn prune_rtn(w: Weight, scheme: Scheme) -> Result<Weight, marlin_quant::QuantError> {
    let t = dense(w);
    let (rows, cols) = (t.shape[0], t.data.len() / t.shape[0].max(1));
    let (kept, positions) = marlin_quant::sparse::prune_magnitude(&t.data, rows, cols)?;
    drop(t);
    let kept = quantize_parallel(&kept, rows, marlin_quant::sparse::kept_cols(cols), scheme)?;
    let s = marlin_quant::SparseMatrix::from_parts(kept, positions.into(), cols)?;
    Ok(Weight::Sparse(s))
}

/// Any weight as f32: quantized and sparse ones decoded by their spec.
pub(super) fn dense(w: Weight) -> crate::DenseTensor {
    match w {
        Weight::Dense(t) => t,
        Weight::Quant(q) => crate::DenseTensor {
            shape: vec![q.rows(), q.cols()],
            data: q.dequantize(),
        },
        Weight::Sparse(s) => crate::DenseTensor {
            shape: vec![s.rows(), s.cols()],
            data: s.dequantize(),
        },
    }
}

/// [`marlin_quant::quantize`] over blocks of rows on every core, bit for bit the same: rows
/// are quantized independently, except under NVFP4, whose scale spans the whole tensor.
// weights (rows, cols) -> QuantMatrix (rows, cols)
pub fn quantize_parallel(
    data: &[f32],
    rows: usize,
    cols: usize,
    scheme: Scheme,
) -> Result<QuantMatrix<'static>, marlin_quant::QuantError> {
    const ROWS_PER_TASK: usize = 64;
    if scheme.format() == Format::Nvfp4 || rows <= ROWS_PER_TASK || data.len() != rows * cols {
        return quantize(data, rows, cols, scheme);
    }
    let parts = data
        .par_chunks(ROWS_PER_TASK * cols)
        .enumerate()
        .map(|(i, chunk)| {
            quantize(chunk, chunk.len() / cols, cols, scheme).map_err(|e| match e {
                // Report rows of the whole matrix, not of the block.
                marlin_quant::QuantError::NonFinite { row, col, value } => {
                    marlin_quant::QuantError::NonFinite {
                        row: row + i * ROWS_PER_TASK,
                        col,
                        value,
                    }
                }
                e => e,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&QuantMatrix<'_>> = parts.iter().collect();
    Ok(QuantMatrix::concat_rows(&refs).expect("blocks of one matrix share scheme and width"))
}

fn in_tensor(src: &dyn WeightSource, name: &str, e: marlin_quant::QuantError) -> ModelError {
    ModelError::Quantize {
        path: src.path().to_owned(),
        name: name.to_owned(),
        source: e,
    }
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Embedding first, then the layers by number (not by text: 2 before 10), then the rest, so
/// progress follows the model and a layer's weights are written together.
fn in_layer_order(mut tensors: Vec<StoredTensor>) -> Vec<StoredTensor> {
    tensors.sort_by(|a, b| {
        let key = |n: &str| match layer_of(n) {
            None if n.starts_with("model.embed_tokens") => (0, 0),
            Some(l) => (1, l),
            None => (2, 0),
        };
        key(&a.name)
            .cmp(&key(&b.name))
            .then_with(|| a.name.cmp(&b.name))
    });
    tensors
}
