//! GPTQ over a whole model, one decoder layer at a time: the calibration tokens' residual
//! stream goes through each layer twice, first with the layer's source weights to collect the
//! Hessian of every product's input, then, once [`marlin_quant::gptq`] has quantized the layer,
//! with the quantized weights, so the next layer is calibrated on what the quantized model
//! computes (the paper's sequential order). Memory: the residual stream (tokens x hidden f32),
//! one layer's weights and its four Hessians (inputs x inputs f64).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use marlin_cpu::{Activations, CpuBackend, dense};
use marlin_quant::{GptqHessian, GptqOptions};

use super::awq::{self, InputStats};
use super::recipe::{Method, Recipe, Target};
use crate::device::Device;
use crate::device::cpu::{CpuAct, CpuDevice, Observer};
use crate::kv_cache::CpuKvCache;
use crate::layers::Embedding;
use crate::llama::LayerAlone;
use crate::{ModelConfig, ModelError, StoredTensor, Weight, WeightSource};

/// What GPTQ calibrates on and how it rounds.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Token sequences, each run as its own sequence (its own attention context).
    pub samples: Vec<Vec<u32>>,
    pub options: GptqOptions,
}

/// A decoder layer's products, in the order the architecture runs them, and the weights each
/// multiplies: the products of one input share one Hessian.
const PRODUCTS: [&[&str]; 4] = [
    &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    &["self_attn.o_proj"],
    &["mlp.gate_proj", "mlp.up_proj"],
    &["mlp.down_proj"],
];

/// Calibration tokens per forward call: enough rows for the matmuls to run at speed, few enough
/// that a call's activations (tokens x intermediate f32) stay small.
const TOKENS_PER_CALL: usize = 4096;

/// The calibration tokens' residual stream, carried from layer to layer.
pub(super) struct Calibrator<'a> {
    calibration: &'a Calibration,
    /// The model's configuration with one layer: each layer runs alone, on a cache of one.
    one_layer: ModelConfig,
    cpu: CpuBackend,
    hidden: usize,
    /// (tokens, hidden): the next layer's input for every calibration token, samples in order.
    h: Vec<f32>,
}

impl<'a> Calibrator<'a> {
    /// The residual stream after the embedding.
    pub(super) fn new(
        src: &dyn WeightSource,
        calibration: &'a Calibration,
    ) -> Result<Self, ModelError> {
        let config = src.config();
        let total: usize = calibration.samples.iter().map(Vec::len).sum();
        if total == 0 {
            return Err(ModelError::Config {
                path: src.path().to_owned(),
                what: "GPTQ has no calibration tokens: give a longer --calibration text".into(),
            });
        }
        let table = Embedding::new(src.weight("model.embed_tokens.weight")?)?;
        let vocab = table.vocab_size();
        let tokens: Vec<u32> = calibration.samples.concat();
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::TokenOutOfRange { id, vocab });
        }
        let one_layer = ModelConfig {
            num_hidden_layers: 1,
            ..config.clone()
        };
        // int8 activations with an int8 residual (~14 bits): the CPU's default, which moves no
        // perplexity of docs/quantization.md against f32, at close to int8 speed.
        let cpu = CpuBackend::detect().with_activations(Activations::Int8x2);
        Ok(Calibrator {
            calibration,
            one_layer,
            cpu,
            hidden: table.hidden(),
            h: table.forward(&tokens),
        })
    }

    /// GPTQ on the matrices of decoder layer `l` that `recipe` quantizes (by weight name),
    /// then the residual stream moved past the quantized layer.
    pub(super) fn layer(
        &mut self,
        src: &dyn WeightSource,
        recipe: &Recipe,
        l: usize,
    ) -> Result<HashMap<String, Weight>, ModelError> {
        let hessians = self.hessians(src, l)?;
        let mut out = HashMap::new();
        if recipe.method == Method::Awq {
            self.awq_layer(src, recipe, l, &hessians, &mut out)?;
            return self.advance(src, l, out);
        }
        for (names, h) in PRODUCTS.iter().zip(&hessians) {
            let mut prepared: Option<GptqHessian> = None;
            for n in names.iter() {
                let name = format!("model.layers.{l}.{n}.weight");
                let w = src.weight(&name)?;
                let shape = w.shape();
                let Target::Quant(scheme) = recipe.target(&name, &shape) else {
                    continue;
                };
                let t = super::quantize::dense(w);
                let (rows, data) = (t.shape[0], t.data);
                let cols = data.len() / rows.max(1);
                let in_weight = |e| ModelError::Quantize {
                    path: src.path().to_owned(),
                    name: name.clone(),
                    source: e,
                };
                // One factorization for the products that share the input.
                let hessian = match prepared.take() {
                    Some(p) if p.cols() == cols => p,
                    _ => GptqHessian::new(&h.sum, cols, self.calibration.options)
                        .map_err(in_weight)?,
                };
                let q = if recipe.sparse_2_4 {
                    Weight::Sparse(hessian.sparsify(&data, rows, scheme).map_err(in_weight)?)
                } else {
                    Weight::Quant(hessian.quantize(&data, rows, scheme).map_err(in_weight)?)
                };
                prepared = Some(hessian);
                out.insert(name, q);
            }
        }
        self.advance(src, l, out)
    }

    /// AWQ on layer `l` (checkpoint/awq.rs) from the Hessians and activation means of its
    /// source run.
    fn awq_layer(
        &self,
        src: &dyn WeightSource,
        recipe: &Recipe,
        l: usize,
        hessians: &[Hessian],
        out: &mut HashMap<String, Weight>,
    ) -> Result<(), ModelError> {
        let stats: Vec<InputStats<'_>> = hessians
            .iter()
            .map(|h| InputStats {
                h: &h.sum,
                mean_abs: h.abs.clone(),
            })
            .collect();
        awq::quantize_layer(src, recipe, l, &stats, out)
    }

    /// The stream moved past layer `l` with its quantized weights `out` (and any changed
    /// norms), which are returned.
    fn advance(
        &mut self,
        src: &dyn WeightSource,
        l: usize,
        out: HashMap<String, Weight>,
    ) -> Result<HashMap<String, Weight>, ModelError> {
        let quantized = Overlay { src, weights: &out };
        let layer = LayerAlone::load(&quantized, &CpuDevice::new(self.cpu), l)?;
        self.run(&layer, None)?;
        Ok(out)
    }

    /// `2 X^T X / tokens` of the input of each of layer `l`'s products ([`PRODUCTS`] order),
    /// with the layer's source weights.
    fn hessians(&mut self, src: &dyn WeightSource, l: usize) -> Result<Vec<Hessian>, ModelError> {
        let sums = Arc::new(Mutex::new(Hessians::default()));
        let seen = sums.clone();
        let observer = Observer(Arc::new(move |x: &[f32], width: usize| {
            seen.lock().expect("no panic while held").add(x, width);
        }));
        let device = CpuDevice {
            cpu: self.cpu,
            observer: Some(observer),
        };
        let layer = LayerAlone::load(src, &device, l)?;
        self.run(&layer, Some(&device))?;
        drop(layer);
        drop(device);
        let tokens = self.h.len() / self.hidden;
        let sums = Arc::try_unwrap(sums)
            .map_err(|_| ())
            .expect("the observer is dropped with its device")
            .into_inner()
            .expect("no panic while held");
        if sums.each.len() != PRODUCTS.len() {
            return Err(ModelError::Config {
                path: src.path().to_owned(),
                what: format!(
                    "GPTQ expected {} products in layer {l}, saw {}: this architecture is not \
                     supported by GPTQ yet; use --method rtn",
                    PRODUCTS.len(),
                    sums.each.len()
                ),
            });
        }
        Ok(sums
            .each
            .into_iter()
            .map(|mut h| {
                let scale = 2.0 / tokens as f64;
                h.sum.iter_mut().for_each(|v| *v *= scale);
                h.abs.iter_mut().for_each(|v| *v /= tokens as f64);
                h
            })
            .collect())
    }

    /// The layer over every calibration sample, a few samples per call. With `observe` (the
    /// device that watches products) the stream is left as it was; without, it moves on.
    fn run(
        &mut self,
        layer: &LayerAlone<CpuDevice>,
        observe: Option<&CpuDevice>,
    ) -> Result<(), ModelError> {
        let plain = CpuDevice::new(self.cpu);
        let device = observe.unwrap_or(&plain);
        let hidden = self.hidden;
        let samples = &self.calibration.samples;
        let per_call = (TOKENS_PER_CALL / samples[0].len().max(1)).max(1);
        let mut at = 0;
        for chunk in samples.chunks(per_call) {
            let tokens: usize = chunk.iter().map(Vec::len).sum();
            let rows = at * hidden..(at + tokens) * hidden;
            let mut cache = CpuKvCache::new(&self.one_layer, 64, usize::MAX);
            let counts: Vec<_> = chunk
                .iter()
                .map(|s| (cache.add_sequence(), s.len()))
                .collect();
            let mut pass = device.begin(&mut cache, &counts)?;
            let mut act = CpuAct {
                data: self.h[rows.clone()].to_vec(),
                width: hidden,
            };
            layer.forward(device, &mut pass, &mut cache, &mut act)?;
            if observe.is_none() {
                self.h[rows].copy_from_slice(&act.data);
            }
            at += tokens;
        }
        Ok(())
    }
}

/// One product input's `sum of x x^T` (f64, inputs x inputs), then its Hessian; and the sum of
/// `|x|` per input (AWQ's activation statistic), then its mean.
struct Hessian {
    sum: Vec<f64>,
    abs: Vec<f64>,
}

/// Every product's sums, found by the order products run in: call `i` of a chunk is product
/// `i % 4` (q|k|v, o, gate|up, down).
#[derive(Default)]
struct Hessians {
    each: Vec<Hessian>,
    calls: usize,
}

impl Hessians {
    // x (tokens, width) -> each[i].sum += x^T x
    fn add(&mut self, x: &[f32], width: usize) {
        let i = self.calls % PRODUCTS.len();
        self.calls += 1;
        if self.each.len() <= i {
            self.each.push(Hessian {
                sum: vec![0f64; width * width],
                abs: vec![0f64; width],
            });
        }
        let tokens = x.len() / width;
        // x^T x as (x^T)(x^T)^T: one f32 GEMM on every core, summed into f64 per call so that
        // tens of thousands of tokens do not lose precision.
        let mut xt = vec![0f32; x.len()];
        let mut abs = vec![0f64; width];
        for (t, row) in x.chunks_exact(width).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                xt[c * tokens + t] = v;
                abs[c] += v.abs() as f64;
            }
        }
        if self.each[i].abs.len() == width {
            self.each[i]
                .abs
                .iter_mut()
                .zip(&abs)
                .for_each(|(s, a)| *s += a);
        }
        let mut prod = vec![0f32; width * width];
        dense::matmul_f32(&xt, width, &xt, width, &mut prod).expect("shapes agree");
        let sum = &mut self.each[i].sum;
        if sum.len() == prod.len() {
            sum.iter_mut().zip(&prod).for_each(|(s, &p)| *s += p as f64);
        }
    }
}

/// The source with some weights replaced (a layer's GPTQ results).
struct Overlay<'a> {
    src: &'a dyn WeightSource,
    weights: &'a HashMap<String, Weight>,
}

impl WeightSource for Overlay<'_> {
    fn config(&self) -> &ModelConfig {
        self.src.config()
    }
    fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name) || self.src.contains(name)
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        match self.weights.get(name) {
            Some(q) => Ok(q.clone()),
            None => self.src.weight(name),
        }
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        self.src.tensors()
    }
    fn path(&self) -> &Path {
        self.src.path()
    }
}
