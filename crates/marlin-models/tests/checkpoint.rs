//! Our checkpoint: written from the tiny Hugging Face fixtures in every format, read back bit
//! for bit, loaded into a model that computes what quantizing in memory computes, and written
//! atomically (a failure leaves no output, a re-run succeeds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use marlin_cpu::CpuBackend;
use marlin_models::checkpoint::{
    Calibration, Checkpoint, DenseType, Entry, Method, Recipe, Target, quantize_model,
    quantize_model_calibrated, quantize_parallel,
};
use marlin_models::hf::HfModel;
use marlin_models::{
    DenseTensor, Model, ModelConfig, ModelError, Precision, SeqTokens, StoredTensor, Weight,
    WeightSource,
};
use marlin_quant::{Format, GptqOptions, Group, Scheme, quantize};

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/tiny/{family}"))
}

fn write(src: &dyn WeightSource, recipe: &Recipe, out: &Path) {
    quantize_model(src, recipe, out, &[], &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
}

/// The source's weights as the recipe wants them, quantized in memory by the reference
/// (serial) quantizer: what a checkpoint must hold and compute.
struct InMemory<'a> {
    src: &'a dyn WeightSource,
    recipe: Recipe,
}

impl WeightSource for InMemory<'_> {
    fn config(&self) -> &ModelConfig {
        self.src.config()
    }
    fn contains(&self, name: &str) -> bool {
        self.src.contains(name)
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out = self.src.tensors();
        for t in &mut out {
            if let Target::Quant(s) = self.recipe.target(&t.name, &t.shape) {
                t.stored_as = s.to_string();
            }
        }
        out
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        let w = self.src.weight(name)?;
        match (self.recipe.target(name, &w.shape()), w) {
            (Target::Quant(s), Weight::Dense(t)) => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                Ok(Weight::Quant(quantize(&t.data, rows, cols, s)?))
            }
            (_, w) => Ok(w),
        }
    }
}

fn schemes() -> Vec<Scheme> {
    let mut out: Vec<Scheme> = Format::ALL.iter().map(|&f| Scheme::of(f)).collect();
    out.push(Scheme::new(Format::Int4, Group::Size(128)).unwrap());
    out.push(Scheme::new(Format::Int2, Group::Size(16)).unwrap());
    out.push(Scheme::new(Format::Fp8, Group::Size(64)).unwrap());
    out
}

#[test]
fn every_format_round_trips_bit_for_bit() {
    let src = HfModel::open(fixture("llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for scheme in schemes() {
        let out = dir.path().join(scheme.to_string().replace(' ', "-"));
        let recipe = Recipe::new(scheme);
        write(&src, &recipe, &out);
        let ckpt = Checkpoint::open(&out).unwrap_or_else(|e| panic!("{scheme}: {e}"));
        let reference = InMemory {
            src: &src,
            recipe: recipe.clone(),
        };
        let mut quantized = 0;
        for t in src.tensors() {
            let (got, want) = (
                ckpt.weight(&t.name).unwrap(),
                reference.weight(&t.name).unwrap(),
            );
            match (&got, &want) {
                (Weight::Quant(g), Weight::Quant(w)) => {
                    assert_eq!(g, w, "{scheme}: {}", t.name);
                    quantized += 1;
                }
                (Weight::Dense(g), Weight::Dense(w)) => assert_eq!(g, w, "{scheme}: {}", t.name),
                _ => panic!("{scheme}: {} stored as another kind", t.name),
            }
        }
        // 7 matrices in each of 2 layers; embedding and untied head kept.
        assert_eq!(quantized, 14, "{scheme}");
        assert_eq!(
            ckpt.entry("lm_head.weight"),
            Some(&Entry::Dense {
                dtype: DenseType::F32,
                shape: vec![300, 64]
            })
        );
    }
}

/// `sparse_2_4`: every quantized matrix is stored compressed and reads back as the reference
/// magnitude pruning gives it, bit for bit, with half the codes of the dense matrix.
#[test]
fn sparse_matrices_round_trip_bit_for_bit() {
    let src = HfModel::open(fixture("llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for scheme in schemes() {
        let out = dir.path().join(scheme.to_string().replace(' ', "-"));
        let mut recipe = Recipe::new(scheme);
        recipe.sparse_2_4 = true;
        write(&src, &recipe, &out);
        let ckpt = Checkpoint::open(&out).unwrap_or_else(|e| panic!("{scheme}: {e}"));
        let mut sparse = 0;
        for t in src.tensors() {
            let Target::Quant(_) = recipe.target(&t.name, &t.shape) else {
                continue;
            };
            let Weight::Dense(d) = src.weight(&t.name).unwrap() else {
                panic!("the fixture is dense");
            };
            let want =
                marlin_quant::SparseMatrix::prune_rtn(&d.data, d.shape[0], d.shape[1], scheme)
                    .unwrap();
            match ckpt.weight(&t.name).unwrap() {
                Weight::Sparse(got) => assert_eq!(got, want, "{scheme}: {}", t.name),
                _ => panic!("{scheme}: {} is not sparse", t.name),
            }
            assert_eq!(ckpt.entry(&t.name).unwrap().shape(), d.shape);
            sparse += 1;
        }
        assert_eq!(sparse, 14, "{scheme}");
    }
}

#[test]
fn parallel_quantization_is_the_reference_bit_for_bit() {
    let w = marlin_testkit::rng::gaussian(3, 300 * 96, 0.02);
    for scheme in schemes() {
        let serial = quantize(&w, 300, 96, scheme).unwrap();
        assert_eq!(
            quantize_parallel(&w, 300, 96, scheme).unwrap(),
            serial,
            "{scheme}"
        );
    }
}

/// Each family's own path (F32, BF16, F16 with biases, two BF16 shards with q/k norms): dense
/// tensors keep their dtype, and the model computes exactly what the in-memory weights give.
#[test]
fn every_family_loads_and_matches_quantizing_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let dtypes = [
        ("llama", DenseType::F32),
        ("mistral", DenseType::BF16),
        ("qwen2", DenseType::F16),
        ("qwen3", DenseType::BF16),
    ];
    for (family, dtype) in dtypes {
        let src = HfModel::open(fixture(family)).unwrap();
        let mut recipe = Recipe::new(Scheme::of(Format::Int4));
        recipe
            .rules
            .push("model.layers.1.mlp.*=int8:64".parse().unwrap());
        let out = dir.path().join(family);
        write(&src, &recipe, &out);
        let ckpt = marlin_models::open(&out).unwrap();
        assert_eq!(ckpt.config(), src.config(), "{family}");
        let norm = ckpt
            .tensors()
            .into_iter()
            .find(|t| t.name == "model.norm.weight")
            .unwrap();
        assert_eq!(norm.stored_as, dtype.name(), "{family}");
        let stored: HashMap<String, String> = ckpt
            .tensors()
            .into_iter()
            .map(|t| (t.name, t.stored_as))
            .collect();
        assert_eq!(stored["model.layers.1.mlp.up_proj.weight"], "int8 g64");
        assert_eq!(stored["model.layers.0.mlp.up_proj.weight"], "int4 g32");
        let reference = InMemory { src: &src, recipe };
        let prompt: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % 300).collect();
        let (a, b) = (logits(ckpt.as_ref(), &prompt), logits(&reference, &prompt));
        assert_eq!(a, b, "{family}");
    }
}

/// Every position's logits of `prompt` on the CPU.
// prompt (t) -> (t, vocab)
fn logits(src: &dyn WeightSource, prompt: &[u32]) -> Vec<f32> {
    let model = Model::load(src, CpuBackend::detect(), Precision::F32).unwrap();
    let mut cache = model.new_cache(16, 64).unwrap();
    let seq = cache.add_sequence();
    model
        .forward_all(
            &[SeqTokens {
                seq,
                tokens: prompt,
            }],
            &mut cache,
        )
        .unwrap()
}

/// The source with one weight poisoned by a NaN: quantizing fails at that weight, mid-write.
struct Poisoned<'a>(&'a dyn WeightSource, &'a str);

impl WeightSource for Poisoned<'_> {
    fn config(&self) -> &ModelConfig {
        self.0.config()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        self.0.tensors()
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        match self.0.weight(name)? {
            Weight::Dense(DenseTensor { shape, mut data }) if name == self.1 => {
                data[5] = f32::NAN;
                Ok(Weight::Dense(DenseTensor { shape, data }))
            }
            w => Ok(w),
        }
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failure_mid_write_leaves_no_output_and_a_rerun_succeeds() {
    let src = HfModel::open(fixture("llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let recipe = Recipe::new(Scheme::of(Format::Int4));
    let bad = Poisoned(&src, "model.layers.1.mlp.down_proj.weight");
    let mut seen = 0;
    let e = quantize_model(&bad, &recipe, &out, &[], &mut |s| seen = s.done).unwrap_err();
    assert!(matches!(e, ModelError::Quantize { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("model.layers.1.mlp.down_proj.weight"),
        "{e}"
    );
    assert!(seen > 5, "it failed mid-write, after {seen} weights");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));

    // A killed run leaves its partial folder; the next run replaces it.
    std::fs::create_dir(dir.path().join(".out.partial")).unwrap();
    std::fs::write(dir.path().join(".out.partial/model.safetensors"), b"half").unwrap();
    write(&src, &recipe, &out);
    assert_eq!(entries(dir.path()), ["out"]);
    assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
    Checkpoint::open(&out).unwrap();

    // An existing output is never written over.
    let e = quantize_model(&src, &recipe, &out, &[], &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    Checkpoint::open(&out).unwrap();
}

#[test]
fn kept_and_requantized_weights_of_a_quantized_source() {
    // A source holding int8 g32 matrices (as GGUF Q8_0 would): kept ones stay packed bit for
    // bit, and a target of the same scheme copies rather than re-rounds.
    let src = HfModel::open(fixture("llama")).unwrap();
    let int8 = Recipe::new(Scheme::of(Format::Int8));
    let packed = InMemory {
        src: &src,
        recipe: int8.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut recipe = Recipe::new(Scheme::of(Format::Int8));
    recipe.rules.push("model.layers.0.*=keep".parse().unwrap());
    recipe
        .rules
        .push("model.layers.1.mlp.*=fp4".parse().unwrap());
    write(&packed, &recipe, &out);
    let ckpt = Checkpoint::open(&out).unwrap();
    for name in [
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.q_proj.weight",
    ] {
        let (Weight::Quant(a), Weight::Quant(b)) =
            (ckpt.weight(name).unwrap(), packed.weight(name).unwrap())
        else {
            panic!("{name} not quantized")
        };
        assert_eq!(a, b, "{name}");
    }
    let Weight::Quant(fp4) = ckpt.weight("model.layers.1.mlp.up_proj.weight").unwrap() else {
        panic!("not quantized")
    };
    assert_eq!(fp4.format(), Format::Fp4);
}

/// A GGUF source has no config.json: the one written from its configuration must read back to
/// the same configuration.
#[test]
fn a_written_config_reads_back_the_same() {
    for family in ["llama", "mistral", "qwen2", "qwen3"] {
        let src = HfModel::open(fixture(family)).unwrap();
        let mut c = src.config().clone();
        let json = marlin_models::checkpoint::config_json(&c);
        let bytes = serde_json::to_vec(&json).unwrap();
        let back = marlin_models::hf::parse_config(Path::new("x"), &bytes, None).unwrap();
        assert_eq!(back, c, "{family}");
        c.sliding_window = Some(7);
        if family == "mistral" {
            let bytes = serde_json::to_vec(&marlin_models::checkpoint::config_json(&c)).unwrap();
            let back = marlin_models::hf::parse_config(Path::new("x"), &bytes, None).unwrap();
            assert_eq!(back.sliding_window, Some(7), "{family}");
        }
    }
}

/// The GPU reads a checkpoint's matrices as it reads any quantized weight: every position's
/// logits (forward_all) match the CPU's in f32, in each family of formats. Skips (saying so)
/// where there is no adapter, unless MARLIN_REQUIRE_GPU=1.
#[test]
fn a_checkpoint_runs_on_the_gpu_as_on_the_cpu() {
    let Some(gpu) = marlin_gpu::test_gpu() else {
        return;
    };
    let src = HfModel::open(fixture("llama")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompt: Vec<u32> = (0..13).map(|i| (i * 53 + 7) % 300).collect();
    for format in [
        Format::Int4,
        Format::Fp4,
        Format::Int8,
        Format::Int2,
        Format::Fp8,
    ] {
        let out = dir.path().join(format.name());
        write(&src, &Recipe::new(Scheme::of(format)), &out);
        let ckpt = Checkpoint::open(&out).unwrap();
        let cpu = logits(&ckpt, &prompt);
        let model = Model::load(&ckpt, gpu.clone(), Precision::F32).unwrap();
        let mut cache = model.new_cache(16, 64).unwrap();
        let seq = cache.add_sequence();
        let on_gpu = model
            .forward_all(
                &[SeqTokens {
                    seq,
                    tokens: &prompt,
                }],
                &mut cache,
            )
            .unwrap();
        assert_eq!(on_gpu.len(), cpu.len());
        let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = cpu
            .iter()
            .zip(&on_gpu)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        eprintln!("{format}: GPU vs CPU relative error {err:.2e}");
        // Same weights, f32 sums in other orders (measured on lavapipe: at most 1.1e-6).
        assert!(err < 1e-4, "{format}: GPU vs CPU relative error {err:.2e}");
    }
}

/// AWQ divides norms and up_proj's rows by the scales it multiplies into the matrices: the model
/// must compute the same function, so its logits stay about as close to the source's as plain
/// rounding's (a wrong fold would move them by the scales themselves, far more). Some layer's
/// norm must have changed, or the test would prove nothing.
#[test]
fn awq_folds_its_scales_without_changing_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let calibration = Calibration {
        samples: (0..4)
            .map(|s| (0..48).map(|i| (i * 37 + s * 11 + 5) % 300).collect())
            .collect(),
        options: GptqOptions::default(),
    };
    let prompt: Vec<u32> = (0..11).map(|i| (i * 41 + 3) % 300).collect();
    let mut changed = 0;
    for family in ["llama", "mistral", "qwen2", "qwen3"] {
        let src = HfModel::open(fixture(family)).unwrap();
        let rtn = Recipe::new(Scheme::of(Format::Int4));
        let mut awq = rtn.clone();
        awq.method = Method::Awq;
        let (out_rtn, out_awq) = (
            dir.path().join(format!("{family}-rtn")),
            dir.path().join(family),
        );
        write(&src, &rtn, &out_rtn);
        quantize_model_calibrated(&src, &awq, Some(&calibration), &out_awq, &[], &mut |_| {})
            .unwrap();
        let (rtn, awq) = (
            marlin_models::open(&out_rtn).unwrap(),
            marlin_models::open(&out_awq).unwrap(),
        );
        for l in 0..2 {
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                let name = format!("model.layers.{l}.{norm}.weight");
                let dense = |w: Weight| match w {
                    Weight::Dense(t) => t.data,
                    _ => panic!("{name} is dense"),
                };
                if dense(awq.weight(&name).unwrap()) != dense(src.weight(&name).unwrap()) {
                    changed += 1;
                }
            }
        }
        let want = logits(&src, &prompt);
        let err = |got: Vec<f32>| -> f64 {
            got.iter()
                .zip(&want)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let (e_rtn, e_awq) = (
            err(logits(rtn.as_ref(), &prompt)),
            err(logits(awq.as_ref(), &prompt)),
        );
        assert!(e_awq < 1.5 * e_rtn, "{family}: AWQ {e_awq} vs RTN {e_rtn}");
    }
    assert!(changed > 0, "AWQ scaled no input of any fixture");
}
