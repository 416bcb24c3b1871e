//! `metal-marlin quantize` and `eval perplexity` end to end on the tiny Hugging Face fixtures:
//! the checkpoint written by the command computes what quantizing in memory computes, the other
//! commands load it, what is not implemented is refused, and perplexity is what a direct
//! computation over the same windows gives.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use marlin_cpu::CpuBackend;
use marlin_engine::Engine;
use marlin_models::checkpoint::{Recipe, Target};
use marlin_models::hf::HfModel;
use marlin_models::{Model, Precision, SeqTokens, Weight, WeightSource};
use support::{Output, Scratch, run};

const LIMIT: Duration = Duration::from_secs(120);

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../marlin-models/tests/fixtures/tiny")
        .join(family)
}

/// Every position's logits of `prompt`, f32 activations on the CPU.
// prompt (t) -> (t, vocab)
fn logits(model: &Model, prompt: &[u32]) -> Vec<f32> {
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

/// The fixture's weights quantized in memory by the reference quantizer, as `recipe` says.
struct InMemory {
    src: HfModel,
    recipe: Recipe,
}

impl WeightSource for InMemory {
    fn config(&self) -> &marlin_models::ModelConfig {
        self.src.config()
    }
    fn contains(&self, name: &str) -> bool {
        self.src.contains(name)
    }
    fn tensors(&self) -> Vec<marlin_models::StoredTensor> {
        self.src.tensors()
    }
    fn weight(&self, name: &str) -> Result<Weight, marlin_models::ModelError> {
        let w = self.src.weight(name)?;
        match (self.recipe.target(name, &w.shape()), w) {
            (Target::Quant(s), Weight::Dense(t)) if self.recipe.sparse_2_4 => Ok(Weight::Sparse(
                marlin_quant::SparseMatrix::prune_rtn(&t.data, t.shape[0], t.shape[1], s)?,
            )),
            (Target::Quant(s), Weight::Dense(t)) => Ok(Weight::Quant(marlin_quant::quantize(
                &t.data, t.shape[0], t.shape[1], s,
            )?)),
            (_, w) => Ok(w),
        }
    }
}

/// Every position's logits of `prompt` from the checkpoint at `out`, and from the fixture at
/// `input` quantized in memory as `recipe` says (f32 activations on the CPU).
fn disk_and_memory_logits(
    out: &Path,
    input: &Path,
    recipe: Recipe,
    prompt: &[u32],
) -> (Vec<f32>, Vec<f32>) {
    let memory = InMemory {
        src: HfModel::open(input).unwrap(),
        recipe,
    };
    let ckpt = marlin_models::open(out).unwrap();
    let load = |src: &dyn WeightSource| Model::load(src, CpuBackend::detect(), Precision::F32);
    (
        logits(&load(ckpt.as_ref()).unwrap(), prompt),
        logits(&load(&memory).unwrap(), prompt),
    )
}

/// `generate` of 4 tokens as JSON on the CPU from the model at `model`.
fn generate_four(model: &str, hf_home: &Path) -> Output {
    let args = [
        "generate",
        "--model",
        model,
        "--device",
        "cpu",
        "--max-tokens",
        "4",
        "--json",
        "hi",
    ];
    run(&args, "", hf_home, LIMIT)
}

#[test]
fn a_quantized_checkpoint_loads_everywhere_and_computes_what_memory_does() {
    let scratch = Scratch::new("quantize");
    let out = scratch.0.join("qwen2-int4");
    let (input, out_s) = (fixture("qwen2"), out.to_str().unwrap().to_string());
    let args = [
        "quantize",
        input.to_str().unwrap(),
        "-o",
        &out_s,
        "--format",
        "fp4",
        "--layer",
        "model.layers.1.mlp.*=int8:64",
        "--layer",
        "model.embed_tokens=int4",
    ];
    let o = run(&args, "", &scratch.0, LIMIT);
    assert!(o.ok, "{}", o.stderr);
    assert!(o.stderr.contains("wrote"), "{}", o.stderr);
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for file in ["chat_template.jinja", "generation_config.json"] {
        assert!(out.join(file).is_file(), "{file} carried over");
    }

    let mut recipe = Recipe::new(marlin_quant::Scheme::of(marlin_quant::Format::Fp4));
    recipe
        .rules
        .push("model.layers.1.mlp.*=int8:64".parse().unwrap());
    recipe
        .rules
        .push("model.embed_tokens=int4".parse().unwrap());
    let prompt: Vec<u32> = (0..9).map(|i| (i * 41 + 3) % 300).collect();
    let (a, b) = disk_and_memory_logits(&out, &input, recipe, &prompt);
    assert_eq!(a.len(), prompt.len() * 300);
    assert_eq!(a, b);

    let o = run(
        &["inspect", &out_s, "--device", "cpu", "--json"],
        "",
        &scratch.0,
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);
    for needle in ["\"fp4 g32\"", "\"int8 g64\"", "\"int4 g32\"", "packed"] {
        assert!(o.stdout.contains(needle), "{needle} in {}", o.stdout);
    }
    let o = generate_four(&out_s, &scratch.0);
    assert!(o.ok, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 4, "{v}");
    let bench = [
        "bench",
        "--model",
        &out_s,
        "--device",
        "cpu",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "4",
        "--runs",
        "1",
    ];
    let o = run(&bench, "", &scratch.0, LIMIT);
    assert!(o.ok, "{}", o.stderr);
    let o = run(
        &[
            "chat",
            "--model",
            &out_s,
            "--device",
            "cpu",
            "--max-tokens",
            "3",
        ],
        "hello\n",
        &scratch.0,
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);

    // A second run to the same output is refused, and the checkpoint is untouched.
    let o = run(&args, "", &scratch.0, LIMIT);
    assert!(!o.ok && o.stderr.contains("already exists"), "{}", o.stderr);
    assert!(marlin_models::open(&out).is_ok());
}

#[test]
fn what_is_not_implemented_is_refused_and_a_stale_partial_is_replaced() {
    let scratch = Scratch::new("quantize-refuse");
    let input = fixture("llama");
    let out = scratch.0.join("out");
    let base = [
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let cases: [(&[&str], &str); 9] = [
        (
            &["--method", "awq", "--act-order"],
            "--act-order is a GPTQ option",
        ),
        (
            &["--calibration", "x.txt"],
            "--calibration is a calibration option",
        ),
        (&["--samples", "8"], "--samples is a calibration option"),
        (&["--act-order"], "--act-order is a GPTQ option"),
        (&["--no-clip-search"], "--no-clip-search is a GPTQ option"),
        (&["--method", "gptq", "--samples", "0"], "--samples 0"),
        (&["--method", "gptq", "--damp", "2"], "--damp 2"),
        (&["--sparsity", "1:2"], "--sparsity 1:2 is not supported"),
        (&["--layer", "nothing"], "is not GLOB=FORMAT"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = run(&args, "", &scratch.0, LIMIT);
        assert!(
            !o.ok && o.stderr.contains(needle),
            "{extra:?}: {}",
            o.stderr
        );
        assert!(!out.exists());
    }
    // What a killed run leaves behind does not stop the next one.
    let partial = scratch.0.join(".out.partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"cut short").unwrap();
    let o = run(&base, "", &scratch.0, LIMIT);
    assert!(o.ok, "{}", o.stderr);
    assert!(!partial.exists());
    assert!(marlin_models::open(&out).is_ok());
}

/// `--method gptq` end to end, with the built-in corpus and with a text of the user's and
/// act-order: the checkpoint records the method, loads, and runs to finite logits; GPTQ's
/// rounding is not RTN's (the calibration moved some weights).
/// `--sparsity 2:4` with RTN and with GPTQ: the checkpoint holds compressed matrices, computes
/// what pruning in memory computes, generates on the CPU, and the GPU refuses it by name.
#[test]
fn sparse_checkpoints_load_and_generate_on_the_cpu() {
    let scratch = Scratch::new("quantize-sparse");
    let input = fixture("llama");
    let (rtn, gptq) = (scratch.0.join("rtn"), scratch.0.join("gptq"));
    for (out, extra) in [
        (&rtn, &[][..]),
        (&gptq, &["--method", "gptq", "--act-order"][..]),
    ] {
        let mut args = vec![
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--format",
            "int4",
            "--sparsity",
            "2:4",
        ];
        args.extend_from_slice(extra);
        let o = run(&args, "", &scratch.0, LIMIT);
        assert!(o.ok, "{extra:?}: {}", o.stderr);
        let config = std::fs::read_to_string(out.join("config.json")).unwrap();
        assert!(config.contains("\"sparsity\": \"2:4\""), "{config}");
        let src = marlin_models::open(out).unwrap();
        let name = "model.layers.0.mlp.down_proj.weight";
        let Weight::Sparse(s) = src.weight(name).unwrap() else {
            panic!("{name} is not sparse");
        };
        let d = s.dequantize();
        assert!(
            d.chunks(4)
                .all(|q| q.iter().filter(|v| **v != 0.0).count() <= 2)
        );
        let out_s = out.to_str().unwrap();
        let o = generate_four(out_s, &scratch.0);
        assert!(o.ok, "{}", o.stderr);
        let o = run(
            &["inspect", out_s, "--device", "cpu", "--json"],
            "",
            &scratch.0,
            LIMIT,
        );
        assert!(
            o.ok && o.stdout.contains("2:4 int4 g32"),
            "{}{}",
            o.stdout,
            o.stderr
        );
        assert!(!o.stdout.contains("unsupported"), "{}", o.stdout);
        // No GPU here gives "no adapter"; a GPU gives the sparse refusal. Never a panic.
        let gpu = [
            "generate",
            "--model",
            out_s,
            "--device",
            "gpu",
            "--max-tokens",
            "1",
            "hi",
        ];
        let o = run(&gpu, "", &scratch.0, LIMIT);
        assert!(!o.ok && !o.stderr.contains("panicked"), "{}", o.stderr);
        assert!(o.stderr.contains("--device cpu"), "{}", o.stderr);
    }
    let mut recipe = Recipe::new(marlin_quant::Scheme::of(marlin_quant::Format::Int4));
    recipe.sparse_2_4 = true;
    let prompt: Vec<u32> = (0..9).map(|i| (i * 41 + 3) % 300).collect();
    let (a, b) = disk_and_memory_logits(&rtn, &input, recipe, &prompt);
    assert_eq!(a, b);
}

#[test]
fn gptq_writes_a_checkpoint_that_loads() {
    let scratch = Scratch::new("quantize-gptq");
    let input = fixture("llama");
    let text = scratch.0.join("calibration.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let (rtn, gptq, gptq_act) = (
        scratch.0.join("rtn"),
        scratch.0.join("gptq"),
        scratch.0.join("gptq-act"),
    );
    let awq = scratch.0.join("awq");
    let runs: [(&Path, &[&str]); 4] = [
        (&rtn, &[]),
        (&gptq, &["--method", "gptq"]),
        (&awq, &["--method", "awq", "--samples", "2"]),
        (
            &gptq_act,
            &[
                "--method",
                "gptq",
                "--act-order",
                "--samples",
                "2",
                "--calibration",
                text.to_str().unwrap(),
            ],
        ),
    ];
    for (out, extra) in runs {
        let mut args = vec![
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = run(&args, "", &scratch.0, LIMIT);
        assert!(o.ok, "{extra:?}: {}", o.stderr);
        if extra.contains(&"--samples") {
            assert!(o.stderr.contains("on 2 sample(s)"), "{}", o.stderr);
        }
    }
    let config = std::fs::read_to_string(gptq.join("config.json")).unwrap();
    assert!(config.contains("\"method\": \"gptq\""), "{config}");
    let name = "model.layers.0.mlp.down_proj.weight";
    let weight = |dir: &Path| match marlin_models::open(dir).unwrap().weight(name).unwrap() {
        Weight::Quant(q) => q.dequantize(),
        _ => panic!("{name} is quantized"),
    };
    assert_ne!(weight(&rtn), weight(&gptq));
    assert_ne!(weight(&rtn), weight(&awq));
    let config = std::fs::read_to_string(awq.join("config.json")).unwrap();
    assert!(config.contains("\"method\": \"awq\""), "{config}");
    for dir in [&gptq, &gptq_act, &awq] {
        let src = marlin_models::open(dir).unwrap();
        let model = Model::load(src.as_ref(), CpuBackend::detect(), Precision::F32).unwrap();
        assert!(logits(&model, &[1, 2, 3]).iter().all(|v| v.is_finite()));
    }
}

#[test]
fn perplexity_is_the_direct_computation() {
    let scratch = Scratch::new("perplexity");
    let text_path = scratch.0.join("text.txt");
    // Long enough for windows of 160 tokens (prefilled in chunks of 128) to slide.
    let text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor \
                jugs. How vexingly quick daft zebras jump! "
        .repeat(6);
    std::fs::write(&text_path, &text).unwrap();
    let model = fixture("llama");
    let (context, stride) = (160, 100);
    let args = [
        "eval",
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--text",
        text_path.to_str().unwrap(),
        "--context",
        "160",
        "--stride",
        "100",
        "--json",
        "--device",
        "cpu",
        "--activations",
        "f32",
    ];
    let o = run(&args, "", &scratch.0, LIMIT);
    assert!(o.ok, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let got = v["perplexity"].as_f64().unwrap();
    assert!(v["seconds"].as_f64().unwrap() >= 0.0);

    // Each token t >= 1, predicted from its first window that reaches it, one forward pass of
    // that window's tokens before t (last-token logits only: no forward_all involved).
    let engine = Engine::load_on(&model, CpuBackend::detect(), Precision::F32).unwrap();
    let ids = engine.encode(&text).unwrap();
    assert!(
        ids.len() > 2 * context,
        "{} tokens: windows must slide",
        ids.len()
    );
    assert_eq!(v["tokens"].as_u64().unwrap() as usize, ids.len() - 1);
    let m = engine.model();
    let mut nll = 0f64;
    for t in 1..ids.len() {
        let k = (0..)
            .find(|k| (k * stride + context).min(ids.len()) > t)
            .unwrap();
        let begin = k * stride;
        let mut cache = m.new_cache(16, 256).unwrap();
        let seq = cache.add_sequence();
        let logits = m
            .forward(
                &[SeqTokens {
                    seq,
                    tokens: &ids[begin..t],
                }],
                &mut cache,
            )
            .unwrap();
        let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = max
            + logits
                .iter()
                .map(|&l| (l as f64 - max).exp())
                .sum::<f64>()
                .ln();
        nll += lse - logits[ids[t] as usize] as f64;
    }
    let want = (nll / (ids.len() - 1) as f64).exp();
    assert!(
        (got - want).abs() <= 1e-4 * want,
        "eval {got} vs direct {want}"
    );

    let bad = [
        "eval",
        "perplexity",
        "--model",
        model.to_str().unwrap(),
        "--text",
        text_path.to_str().unwrap(),
        "--context",
        "8",
        "--stride",
        "9",
        "--device",
        "cpu",
    ];
    let o = run(&bad, "", &scratch.0, LIMIT);
    assert!(!o.ok && o.stderr.contains("stride"), "{}", o.stderr);
}
