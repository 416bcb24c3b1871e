//! Golden fixtures: tiny random checkpoints written by Hugging Face transformers
//! (`scripts/make_tiny_checkpoints.py`), with the logits and greedy continuations transformers
//! computed from the same files. Loading a folder and running it must give the same numbers.
//!
//! Each family takes its own path (docs/testing.md lists them): llama F32 with Llama 3.1 rope
//! scaling and an untied head, mistral BF16 with a sliding window of 8, qwen2 F16 with q/k/v
//! biases and tied embeddings, qwen3 BF16 in two shards with q/k norms and a wide head_dim.

use std::path::{Path, PathBuf};

use marlin_cpu::CpuBackend;
use marlin_models::hf::HfModel;
use marlin_models::{
    Architecture, KvCache, Model, ModelConfig, ModelError, Precision, SeqId, SeqTokens,
    StoredTensor, Weight, WeightSource,
};
use marlin_quant::{Format, Scheme, quantize};
use serde_json::Value;

const FAMILIES: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];

/// Max |ours - transformers| over the vocabulary, relative to max |logit|, in F32. Both sides
/// compute in float32 from the same stored weights; only the summation order differs.
/// Measured: at most 1.1e-6 (llama, 19 tokens); leaving out what a family exercises costs
/// 0.36 or more (a_wrong_model_is_caught).
const F32_BUDGET: f32 = 5e-6;

/// The same with the layers' weights in INT8 (group 32, GGUF Q8_0), at every precision: the
/// rounding of the weights (and of the activations, at Int8 and Int8x2) on 64-wide products of
/// random weights. Measured: at most 3.7e-2 (qwen2, Int8, 37 tokens), 3.2e-2 with f32 or
/// int8x2 activations. Still well under the 0.36 of a missing feature.
const INT8_BUDGET: f32 = 1e-1;

/// Two float32 evaluations of the same math with different matrix shapes (a batch or one
/// sequence, chunks or one pass): the dense matmul's blocking, so its summation order, follows
/// the row count. Measured: at most 1.0e-6 (mistral, 19 tokens in chunks of 5); 6.8e-7 batched.
const REORDER_BUDGET: f32 = 5e-6;

/// The GPU against transformers, in f32: the kernels sum in other orders (tree reductions,
/// split-K attention) and the GPU's exp and sin may be a few ulp off. Measured on lavapipe:
/// at most 1.1e-6, as the CPU; well under the 0.36 of a missing feature.
const GPU_BUDGET: f32 = 5e-6;

struct PromptRef {
    ids: Vec<u32>,
    last_logits: Vec<f32>,
    greedy: Vec<u32>,
    greedy_min_margin: f32,
}

fn folder(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/tiny/{family}"))
}

fn references(family: &str) -> Vec<PromptRef> {
    let path = folder(family).join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap();
    let numbers = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    json["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PromptRef {
            ids: numbers(&p["ids"]).into_iter().map(|x| x as u32).collect(),
            last_logits: numbers(&p["last_logits"])
                .into_iter()
                .map(|x| x as f32)
                .collect(),
            greedy: numbers(&p["greedy"])
                .into_iter()
                .map(|x| x as u32)
                .collect(),
            greedy_min_margin: p["greedy_min_margin"].as_f64().unwrap() as f32,
        })
        .collect()
}

fn open(family: &str) -> HfModel {
    HfModel::open(folder(family)).unwrap_or_else(|e| panic!("{family}: {e}"))
}

fn load(src: &dyn WeightSource, precision: Precision) -> Model {
    Model::load(src, CpuBackend::detect(), precision).unwrap()
}

fn cache(model: &Model) -> KvCache {
    model.new_cache(4, 256).unwrap()
}

/// The last token's logits of `prompt`, prefilled `chunk` tokens per pass.
// prompt (tokens) -> (vocab)
fn last_logits(model: &Model, prompt: &[u32], chunk: usize) -> Vec<f32> {
    let mut cache = cache(model);
    let seq = cache.add_sequence();
    let mut logits = Vec::new();
    for tokens in prompt.chunks(chunk) {
        logits = model
            .forward(&[SeqTokens { seq, tokens }], &mut cache)
            .unwrap();
    }
    logits
}

/// `n` tokens by argmax, decoding one at a time through the cache.
fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = cache(model);
    let seq = cache.add_sequence();
    let mut logits = model
        .forward(
            &[SeqTokens {
                seq,
                tokens: prompt,
            }],
            &mut cache,
        )
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let next = argmax(&logits);
        out.push(next);
        logits = model
            .forward(
                &[SeqTokens {
                    seq,
                    tokens: &[next],
                }],
                &mut cache,
            )
            .unwrap();
    }
    out
}

/// Every prompt of `refs` as one batch, each in a new sequence of `cache`: the sequences and
/// each one's last logits, one after another.
fn forward_all(model: &Model, refs: &[PromptRef], cache: &mut KvCache) -> (Vec<SeqId>, Vec<f32>) {
    let seqs: Vec<_> = refs.iter().map(|_| cache.add_sequence()).collect();
    let batch: Vec<SeqTokens> = refs
        .iter()
        .zip(&seqs)
        .map(|(r, &seq)| SeqTokens {
            seq,
            tokens: &r.ids,
        })
        .collect();
    (seqs, model.forward(&batch, cache).unwrap())
}

/// [`greedy`] with the argmax taken by the model's device (`Model::forward_greedy`).
fn greedy_on_device(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = cache(model);
    let seq = cache.add_sequence();
    let mut out = Vec::new();
    let mut tokens = prompt.to_vec();
    while out.len() < n {
        let next = model
            .forward_greedy(
                &[SeqTokens {
                    seq,
                    tokens: &tokens,
                }],
                &mut cache,
            )
            .unwrap();
        out.push(next[0]);
        tokens = next;
    }
    out
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// max |got - want| / max |want|.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "vocabulary sizes differ");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    err / scale
}

/// The largest relative error of the last-token logits over a family's prompts.
fn worst_error(model: &Model, refs: &[PromptRef]) -> f32 {
    refs.iter()
        .map(|r| relative_error(&last_logits(model, &r.ids, r.ids.len()), &r.last_logits))
        .fold(0f32, f32::max)
}

/// A folder's weights seen through changes: another configuration (to show that the fixtures
/// notice a missing feature) or linear weights quantized on the way.
struct Altered {
    inner: HfModel,
    config: ModelConfig,
    quantize: Option<Format>,
}

impl Altered {
    fn new(family: &str) -> Self {
        let inner = open(family);
        let config = inner.config().clone();
        Altered {
            inner,
            config,
            quantize: None,
        }
    }
}

impl WeightSource for Altered {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        self.inner.tensors()
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let w = self.inner.weight(name)?;
        match (self.quantize, w) {
            // Layer matrices only: the embedding stays a lookup table, as GGUF Q8_0 files keep
            // their vectors in f32.
            (Some(f), Weight::Dense(t)) if t.shape.len() == 2 && name.contains(".layers.") => {
                let (n, k) = (t.shape[0], t.shape[1]);
                Ok(Weight::Quant(
                    quantize(&t.data, n, k, Scheme::of(f)).unwrap(),
                ))
            }
            (_, w) => Ok(w),
        }
    }
}

#[test]
fn logits_match_transformers_in_f32() {
    for family in FAMILIES {
        let model = load(&open(family), Precision::F32);
        for r in references(family) {
            let got = last_logits(&model, &r.ids, r.ids.len());
            let err = relative_error(&got, &r.last_logits);
            eprintln!(
                "{family} prompt of {}: relative error {err:.2e}",
                r.ids.len()
            );
            assert!(
                err <= F32_BUDGET,
                "{family}, prompt of {} tokens: relative error {err:.2e} > {F32_BUDGET:.0e}",
                r.ids.len()
            );
        }
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for family in FAMILIES {
        let model = load(&open(family), Precision::F32);
        for r in references(family) {
            let got = greedy(&model, &r.ids, r.greedy.len());
            assert_eq!(
                got,
                r.greedy,
                "{family}, prompt of {} tokens (smallest top-2 gap on the way: {})",
                r.ids.len(),
                r.greedy_min_margin
            );
        }
    }
}

/// Dense weights run in f32 at every precision (int8 activations feed only quantized
/// matmuls), so Int8 and Int8x2 keep the F32 answers on a BF16/F16/F32 folder (measured:
/// bit for bit).
#[test]
fn every_precision_matches_on_dense_weights() {
    for family in FAMILIES {
        let src = open(family);
        for precision in [Precision::Int8, Precision::Int8x2] {
            let err = worst_error(&load(&src, precision), &references(family));
            assert!(
                err <= F32_BUDGET,
                "{family} {precision:?}: relative error {err:.2e} > {F32_BUDGET:.0e}"
            );
        }
    }
}

/// With INT8 weights every precision stays close to transformers. Not a greedy check: int8
/// rounding moves logits by up to 0.3 here, more than some of transformers' top-two gaps (qwen2's
/// one-token prompt: 0.036), so a correct model may pick the runner-up there.
#[test]
fn int8_weights_stay_close_at_every_precision() {
    for family in FAMILIES {
        let mut src = Altered::new(family);
        src.quantize = Some(Format::Int8);
        for precision in [Precision::F32, Precision::Int8, Precision::Int8x2] {
            let model = load(&src, precision);
            for r in references(family) {
                let got = last_logits(&model, &r.ids, r.ids.len());
                let err = relative_error(&got, &r.last_logits);
                eprintln!(
                    "{family} {precision:?} int8 weights, prompt of {}: {err:.2e}",
                    r.ids.len()
                );
                assert!(
                    err <= INT8_BUDGET,
                    "{family} {precision:?}, prompt of {}: relative error {err:.2e} > \
                     {INT8_BUDGET:.0e}",
                    r.ids.len()
                );
            }
        }
    }
}

#[test]
fn a_batch_of_all_prompts_equals_each_alone() {
    for family in FAMILIES {
        let model = load(&open(family), Precision::F32);
        let refs = references(family);
        let mut cache = cache(&model);
        let (_, all) = forward_all(&model, &refs, &mut cache);
        let vocab = model.config().vocab_size;
        for (r, got) in refs.iter().zip(all.chunks_exact(vocab)) {
            let alone = last_logits(&model, &r.ids, r.ids.len());
            let err = relative_error(got, &alone);
            eprintln!("{family} prompt of {} in a batch: {err:.2e}", r.ids.len());
            assert!(
                err <= REORDER_BUDGET,
                "{family}, prompt of {} in a batch: {err:.2e} from alone",
                r.ids.len()
            );
        }
    }
}

#[test]
fn a_prompt_prefilled_in_chunks_equals_one_pass() {
    for family in FAMILIES {
        let model = load(&open(family), Precision::F32);
        for r in references(family) {
            let whole = last_logits(&model, &r.ids, r.ids.len());
            let chunked = last_logits(&model, &r.ids, 5);
            let err = relative_error(&chunked, &whole);
            eprintln!(
                "{family} prompt of {} in chunks of 5: {err:.2e}",
                r.ids.len()
            );
            assert!(
                err <= REORDER_BUDGET,
                "{family}, prompt of {} in chunks of 5: {err:.2e} from one pass",
                r.ids.len()
            );
        }
    }
}

/// The fixtures can fail: without the feature a family exists to exercise, the logits leave
/// the budget by orders of magnitude.
#[test]
fn a_wrong_model_is_caught() {
    type Break = fn(&mut ModelConfig);
    let breaks: [(&str, &str, Break); 4] = [
        ("llama", "no Llama 3.1 rope scaling", |c| {
            c.rope_scaling = None
        }),
        ("mistral", "no sliding window", |c| c.sliding_window = None),
        ("qwen2", "no q/k/v biases", |c| c.attention_bias = false),
        ("qwen3", "no q/k norms", |c| {
            c.architecture = Architecture::Llama
        }),
    ];
    for (family, what, change) in breaks {
        let mut src = Altered::new(family);
        change(&mut src.config);
        let err = worst_error(&load(&src, Precision::F32), &references(family));
        eprintln!("{family} with {what}: relative error {err:.2e}");
        assert!(
            err > 100.0 * F32_BUDGET,
            "{family} with {what} still matches ({err:.2e}): the fixture does not test it"
        );
    }
}

/// The model on the test GPU (lavapipe in CI), in f32; None (the test skips, saying so) where
/// there is no adapter, unless MARLIN_REQUIRE_GPU=1.
fn on_gpu(src: &dyn WeightSource) -> Option<Model> {
    let gpu = marlin_gpu::test_gpu()?;
    Some(Model::load(src, gpu, Precision::F32).unwrap())
}

/// Every family's path on the GPU: its logits against transformers' when the prompt is
/// prefilled in one pass (the tiled prefill attention), in chunks of 5 over a cached prefix,
/// and one token at a time (split-K decode attention); a batch of all prompts at once; and
/// transformers' greedy continuations exactly.
#[test]
fn the_gpu_matches_transformers() {
    for family in FAMILIES {
        let Some(model) = on_gpu(&open(family)) else {
            return;
        };
        let refs = references(family);
        for r in &refs {
            for chunk in [r.ids.len(), 5, 1] {
                let got = last_logits(&model, &r.ids, chunk);
                let err = relative_error(&got, &r.last_logits);
                eprintln!(
                    "{family} on {}, prompt of {} in chunks of {chunk}: {err:.2e}",
                    model.device(),
                    r.ids.len()
                );
                assert!(
                    err <= GPU_BUDGET,
                    "{family} GPU, prompt of {} in chunks of {chunk}: relative error \
                     {err:.2e} > {GPU_BUDGET:.0e}",
                    r.ids.len()
                );
            }
            assert_eq!(
                greedy(&model, &r.ids, r.greedy.len()),
                r.greedy,
                "{family} GPU greedy, prompt of {} tokens",
                r.ids.len()
            );
            assert_eq!(
                greedy_on_device(&model, &r.ids, r.greedy.len()),
                r.greedy,
                "{family} GPU argmax, prompt of {} tokens",
                r.ids.len()
            );
        }
        let mut cache = cache(&model);
        let (seqs, all) = forward_all(&model, &refs, &mut cache);
        let vocab = model.config().vocab_size;
        for (r, got) in refs.iter().zip(all.chunks_exact(vocab)) {
            let err = relative_error(got, &r.last_logits);
            assert!(err <= GPU_BUDGET, "{family} GPU batch: {err:.2e}");
        }
        // One decode step for every sequence of the batch at once.
        let next: Vec<[u32; 1]> = all.chunks_exact(vocab).map(|l| [argmax(l)]).collect();
        let step: Vec<SeqTokens> = seqs
            .iter()
            .zip(&next)
            .map(|(&seq, t)| SeqTokens { seq, tokens: t })
            .collect();
        let stepped = model.forward(&step, &mut cache).unwrap();
        for ((r, t), got) in refs.iter().zip(&next).zip(stepped.chunks_exact(vocab)) {
            let ids: Vec<u32> = r.ids.iter().chain(t).copied().collect();
            let alone = last_logits(&model, &ids, ids.len());
            let err = relative_error(got, &alone);
            assert!(err <= GPU_BUDGET, "{family} GPU batched decode: {err:.2e}");
        }
    }
}

/// Quantized layers on the GPU (its fused dequantize + matmul kernels) give the CPU's f32
/// answers: both multiply f32 activations by the same decoded weights.
#[test]
fn the_gpu_runs_quantized_weights_as_the_cpu() {
    for family in FAMILIES {
        for format in [Format::Int4, Format::Fp4, Format::Int8, Format::Int4Affine] {
            let mut src = Altered::new(family);
            src.quantize = Some(format);
            let Some(gpu) = on_gpu(&src) else {
                return;
            };
            let cpu = load(&src, Precision::F32);
            for r in references(family) {
                let want = last_logits(&cpu, &r.ids, r.ids.len());
                for chunk in [r.ids.len(), 1] {
                    let err = relative_error(&last_logits(&gpu, &r.ids, chunk), &want);
                    assert!(
                        err <= GPU_BUDGET,
                        "{family} {format:?} GPU vs CPU, prompt of {} in chunks of {chunk}: \
                         {err:.2e}",
                        r.ids.len()
                    );
                }
            }
        }
    }
}

/// Every quantized product on the GPU with x on int8 grids (`MatmulPrecision::Int8x2`), each
/// layer's normed x made by the product before it (the o and down products' epilogues), stays
/// as close to the CPU's answers with int8x2 activations as the GPU's f32 products do (both
/// measured at most 7.6e-4 on these 64-wide models; an error of 1% in the norm that the
/// epilogue's sums give is 5e-3). Token by token: the chained products are the small-batch
/// kernel's (a prefill of more rows runs on f16 cooperative matrices where the device has them).
const INT8X2_GPU_BUDGET: f32 = 1e-3;

#[test]
fn int8_activations_on_the_gpu_match_the_cpus() {
    for family in FAMILIES {
        for format in [Format::Int4, Format::Int4Affine, Format::Int8] {
            let mut src = Altered::new(family);
            src.quantize = Some(format);
            let Some(gpu) = marlin_gpu::test_gpu() else {
                return;
            };
            let matmul = Some(marlin_gpu::MatmulPrecision::Int8x2);
            let gpu = Model::load_on_gpu(&src, gpu, Precision::Int8x2, matmul).unwrap();
            let cpu = load(&src, Precision::Int8x2);
            for r in references(family) {
                let want = last_logits(&cpu, &r.ids, r.ids.len());
                let err = relative_error(&last_logits(&gpu, &r.ids, 1), &want);
                assert!(
                    err <= INT8X2_GPU_BUDGET,
                    "{family} {format:?} GPU vs CPU at int8x2, prompt of {} token by token: \
                     {err:.2e}",
                    r.ids.len()
                );
            }
        }
    }
}

/// `Model::forward_sample` on each device: top-k 1 is the argmax of the same pass, and with
/// top-k 3 every draw (u from 0 to 1, a batch of two prompts at once) is one of the three
/// largest logits of its sequence.
#[test]
fn sampling_draws_only_kept_tokens_on_every_device() {
    use marlin_models::device::SampleChoice;
    let src = open("llama");
    let cpu = load(&src, Precision::F32);
    let models = [Some(cpu), on_gpu(&src)];
    let refs = references("llama");
    let prompts = [&refs[0].ids, &refs[1].ids];
    for model in models.iter().flatten() {
        let wants: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| last_logits(model, p, p.len()))
            .collect();
        for i in 0..8 {
            let u = i as f32 / 8.0;
            let choice = |top_k| SampleChoice {
                top_k,
                u,
                ..SampleChoice::plain(1.5)
            };
            for top_k in [1, 3] {
                let mut cache = cache(model);
                let seqs: Vec<_> = prompts.iter().map(|_| cache.add_sequence()).collect();
                let batch: Vec<SeqTokens> = seqs
                    .iter()
                    .zip(&prompts)
                    .map(|(&seq, p)| SeqTokens { seq, tokens: p })
                    .collect();
                let choices = [choice(top_k), choice(top_k)];
                let ids = model
                    .forward_sample(&batch, &mut cache, &choices, &[])
                    .unwrap();
                for (id, want) in ids.iter().zip(&wants) {
                    let mut order: Vec<usize> = (0..want.len()).collect();
                    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
                    let kept = &order[..top_k];
                    assert!(
                        kept.contains(&(*id as usize)),
                        "{}: top-k {top_k}, u {u}: drew {id}, kept {kept:?}",
                        if model.gpu().is_some() { "GPU" } else { "CPU" }
                    );
                }
            }
        }
    }
}
