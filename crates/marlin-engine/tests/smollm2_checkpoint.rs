//! The default model (GGUF Q4_1) quantized into our checkpoint: the tokenizer written from the
//! GGUF's vocabulary encodes as the GGUF's does, the chat template comes along, and a checkpoint
//! in the GGUF's own scheme (int4-affine g32) is the same model bit for bit; an FP4 one still
//! answers the capital-of-France question (issue 5's must-show).

use marlin_cpu::CpuBackend;
use marlin_engine::chat::Message;
use marlin_engine::generate::GenerateParams;
use marlin_engine::{Engine, TextParams, tokenizer_files};
use marlin_models::checkpoint::{Recipe, quantize_model};
use marlin_models::{Precision, Weight};
use marlin_quant::{Format, Scheme};

fn greedy(max_tokens: usize) -> TextParams {
    TextParams {
        generate: GenerateParams {
            max_tokens,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn quantized(format: Format, dir: &std::path::Path) -> std::path::PathBuf {
    let gguf = marlin_testkit::smollm2_gguf();
    let src = marlin_models::open(&gguf).unwrap();
    let files = tokenizer_files(&gguf).unwrap();
    let out = dir.join(format.name());
    quantize_model(
        src.as_ref(),
        &Recipe::new(Scheme::of(format)),
        &out,
        &files,
        &mut |_| {},
    )
    .unwrap();
    out
}

#[test]
fn the_gguf_scheme_round_trips_the_model_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = quantized(Format::Int4Affine, dir.path());
    let gguf = marlin_testkit::smollm2_gguf();
    let (a, b) = (
        marlin_models::open(&gguf).unwrap(),
        marlin_models::open(&out).unwrap(),
    );
    assert_eq!(a.config(), b.config());
    for t in a.tensors() {
        match (a.weight(&t.name).unwrap(), b.weight(&t.name).unwrap()) {
            (Weight::Quant(x), Weight::Quant(y)) => assert_eq!(x, y, "{}", t.name),
            (Weight::Dense(x), Weight::Dense(y)) => assert_eq!(x, y, "{}", t.name),
            _ => panic!("{} changed kind", t.name),
        }
    }
    let load = |p: &std::path::Path| Engine::load_on(p, CpuBackend::detect(), Precision::F32);
    let (from_gguf, from_ckpt) = (load(&gguf).unwrap(), load(&out).unwrap());
    let chat = [Message::user("What is the capital of France?")];
    let text = "Tokenizers: naïve café, 1234567, <|im_start|> and \n\n  spaces.";
    assert_eq!(
        from_gguf.encode(text).unwrap(),
        from_ckpt.encode(text).unwrap()
    );
    let prompt = from_gguf.encode_chat(&chat).unwrap();
    assert_eq!(prompt, from_ckpt.encode_chat(&chat).unwrap());
    assert_eq!(from_gguf.stop_token_ids(), from_ckpt.stop_token_ids());
    let (x, y) = (
        from_gguf.generate(&prompt, &greedy(12), |_| {}).unwrap(),
        from_ckpt.generate(&prompt, &greedy(12), |_| {}).unwrap(),
    );
    assert_eq!(x.token_ids, y.token_ids, "{:?} vs {:?}", x.text, y.text);
}

#[test]
fn fp4_still_knows_the_capital_of_france() {
    let dir = tempfile::tempdir().unwrap();
    let out = quantized(Format::Fp4, dir.path());
    let engine = Engine::load_on(&out, CpuBackend::detect(), Precision::default()).unwrap();
    let prompt = engine
        .encode_chat(&[Message::user("What is the capital of France?")])
        .unwrap();
    let done = engine.generate(&prompt, &greedy(16), |_| {}).unwrap();
    assert!(done.text.contains("Paris"), "{:?}", done.text);
}
