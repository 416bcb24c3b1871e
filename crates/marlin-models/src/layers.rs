//! The CPU's building blocks: linear layers (dense or quantized) and token embeddings, as the
//! CPU device ([`crate::device::cpu`]) holds them.

use marlin_cpu::{CpuBackend, Prepared, dense};
use marlin_quant::{QuantMatrix, SparseMatrix};

use crate::{DenseTensor, ModelError, Weight};

/// `y = x W^T (+ b)`, with W dense or in one of our quantized formats.
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Vec<f32>>,
    out_features: usize,
}

enum LinearWeight {
    /// (out, in) row-major.
    Dense(Vec<f32>),
    Quant(Prepared<'static>),
    /// 2:4 sparse, used as stored (the sparse kernel reads the kept values in place).
    Sparse(SparseMatrix<'static>),
}

impl Linear {
    /// A linear layer from a `[out, in]` weight, prepared for `cpu` once here.
    pub fn new(cpu: &CpuBackend, w: Weight, bias: Option<Vec<f32>>) -> Result<Self, ModelError> {
        let (weight, out_features) = match w {
            Weight::Quant(q) => {
                let n = q.rows();
                (LinearWeight::Quant(cpu.prepare_owned(q)), n)
            }
            Weight::Sparse(s) => {
                let n = s.rows();
                (LinearWeight::Sparse(s), n)
            }
            Weight::Dense(t) => {
                let &[n, _] = t.shape.as_slice() else {
                    return Err(shape_error("linear weight", vec![0, 0], t.shape));
                };
                (LinearWeight::Dense(t.data), n)
            }
        };
        if let Some(b) = bias.as_ref().filter(|b| b.len() != out_features) {
            return Err(shape_error(
                "linear bias",
                vec![out_features],
                vec![b.len()],
            ));
        }
        Ok(Linear {
            weight,
            bias,
            out_features,
        })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }

    // x (tokens, in) -> (tokens, out)
    pub fn forward(
        &self,
        cpu: &CpuBackend,
        x: &[f32],
        tokens: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let mut y = vec![0f32; tokens * self.out_features];
        match &self.weight {
            LinearWeight::Quant(w) => cpu.matmul_prepared(x, tokens, w, &mut y)?,
            LinearWeight::Sparse(w) => {
                marlin_cpu::sparse::sparse_matmul(cpu.isa(), x, tokens, w, &mut y)?
            }
            LinearWeight::Dense(w) => dense::matmul_f32(x, tokens, w, self.out_features, &mut y)?,
        }
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(self.out_features) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        Ok(y)
    }
}

/// Linear layers that read the same input (q, k, v; gate, up), run as one product when their
/// weights stack (same format and width): one pass over the input and one parallel call
/// instead of several.
pub struct LinearGroup {
    /// One stacked layer, or the parts one by one when they do not stack.
    layers: Vec<Linear>,
    /// Output features of each part.
    outs: Vec<usize>,
}

impl LinearGroup {
    pub fn new(
        cpu: &CpuBackend,
        weights: Vec<Weight>,
        biases: Vec<Option<Vec<f32>>>,
    ) -> Result<Self, ModelError> {
        let outs: Vec<usize> = weights.iter().map(|w| w.shape()[0]).collect();
        let layers = match (stack_weights(&weights), stack_biases(&biases, &outs)) {
            (Some(w), Some(b)) => vec![Linear::new(cpu, w, b)?],
            _ => weights
                .into_iter()
                .zip(biases)
                .map(|(w, b)| Linear::new(cpu, w, b))
                .collect::<Result<_, _>>()?,
        };
        Ok(LinearGroup { layers, outs })
    }

    /// Output features of all parts together.
    pub fn out_features(&self) -> usize {
        self.outs.iter().sum()
    }

    /// The parts' outputs side by side in each row.
    // x (tokens, in) -> (tokens, sum of out_i)
    pub fn forward(
        &self,
        cpu: &CpuBackend,
        x: &[f32],
        tokens: usize,
    ) -> Result<Vec<f32>, ModelError> {
        if let [one] = self.layers.as_slice() {
            return one.forward(cpu, x, tokens);
        }
        let width = self.out_features();
        let mut y = vec![0f32; tokens * width];
        let mut at = 0;
        for layer in &self.layers {
            let part = layer.forward(cpu, x, tokens)?;
            let o = layer.out_features();
            for (row, p) in y.chunks_exact_mut(width).zip(part.chunks_exact(o)) {
                row[at..at + o].copy_from_slice(p);
            }
            at += o;
        }
        Ok(y)
    }
}

/// The weights' rows one after another, when they are all quantized alike or all dense 2-D of
/// one width.
pub(crate) fn stack_weights(weights: &[Weight]) -> Option<Weight> {
    let quant: Vec<&QuantMatrix<'static>> = weights
        .iter()
        .filter_map(|w| {
            if let Weight::Quant(q) = w {
                Some(q)
            } else {
                None
            }
        })
        .collect();
    if quant.len() == weights.len() {
        return QuantMatrix::concat_rows(&quant).map(Weight::Quant);
    }
    let sparse: Vec<&SparseMatrix<'static>> = weights
        .iter()
        .filter_map(|w| match w {
            Weight::Sparse(s) => Some(s),
            _ => None,
        })
        .collect();
    if sparse.len() == weights.len() {
        return SparseMatrix::concat_rows(&sparse).map(Weight::Sparse);
    }
    let dense: Vec<&DenseTensor> = weights
        .iter()
        .filter_map(|w| {
            if let Weight::Dense(t) = w {
                Some(t)
            } else {
                None
            }
        })
        .collect();
    let cols = dense.first()?.shape.get(1).copied()?;
    if dense.len() != weights.len()
        || dense
            .iter()
            .any(|t| t.shape.len() != 2 || t.shape[1] != cols)
    {
        return None;
    }
    let rows = dense.iter().map(|t| t.shape[0]).sum();
    let data = dense.iter().flat_map(|t| t.data.iter().copied()).collect();
    Some(Weight::Dense(DenseTensor {
        shape: vec![rows, cols],
        data,
    }))
}

/// The biases one after another; `Some(None)` when no part has one, `None` when only some do.
pub(crate) fn stack_biases(
    biases: &[Option<Vec<f32>>],
    outs: &[usize],
) -> Option<Option<Vec<f32>>> {
    if biases.iter().all(Option::is_none) {
        return Some(None);
    }
    let all: Option<Vec<&Vec<f32>>> = biases.iter().map(Option::as_ref).collect();
    let all = all?;
    if all.iter().zip(outs).any(|(b, &o)| b.len() != o) {
        return None;
    }
    Some(Some(all.into_iter().flatten().copied().collect()))
}

/// Token embeddings: one row per token id.
pub enum Embedding {
    /// (vocab, hidden) row-major.
    Dense {
        data: Vec<f32>,
        hidden: usize,
    },
    Quant(QuantMatrix<'static>),
}

impl Embedding {
    pub fn new(w: Weight) -> Result<Self, ModelError> {
        match w {
            Weight::Quant(q) => Ok(Embedding::Quant(q)),
            // Only `--layer` rules make an embedding sparse; a lookup reads single rows, so
            // the table is decoded once (documented in docs/quantization.md).
            Weight::Sparse(s) => Ok(Embedding::Dense {
                data: s.dequantize(),
                hidden: s.cols(),
            }),
            Weight::Dense(t) => match t.shape.as_slice() {
                &[_, hidden] => Ok(Embedding::Dense {
                    data: t.data,
                    hidden,
                }),
                _ => Err(shape_error("embedding", vec![0, 0], t.shape)),
            },
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Embedding::Dense { data, hidden } => data.len() / hidden,
            Embedding::Quant(q) => q.rows(),
        }
    }

    pub fn hidden(&self) -> usize {
        match self {
            Embedding::Dense { hidden, .. } => *hidden,
            Embedding::Quant(q) => q.cols(),
        }
    }

    /// The rows of `tokens`; ids must be below `vocab_size` (checked by the caller).
    // tokens (t) -> (t, hidden)
    pub fn forward(&self, tokens: &[u32]) -> Vec<f32> {
        let hidden = self.hidden();
        let mut out = vec![0f32; tokens.len() * hidden];
        for (row, &t) in out.chunks_exact_mut(hidden).zip(tokens) {
            match self {
                Embedding::Dense { data, .. } => {
                    row.copy_from_slice(&data[t as usize * hidden..(t as usize + 1) * hidden]);
                }
                Embedding::Quant(q) => q.dequantize_row(t as usize, row),
            }
        }
        out
    }
}

fn shape_error(name: &str, expected: Vec<usize>, got: Vec<usize>) -> ModelError {
    ModelError::Shape {
        path: Default::default(),
        name: name.to_string(),
        expected,
        got,
    }
}
