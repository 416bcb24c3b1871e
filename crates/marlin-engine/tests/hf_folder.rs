//! The engine on a Hugging Face folder: a small random Llama with SmolLM2's tokenizer
//! (tokenizer.json written from the committed fixture), config.json and BF16 safetensors.
//! It must tokenize as transformers does, generate what the same weights give from memory,
//! stop at every end token the folder names, and find its chat template where transformers
//! looks.

mod tokenizer_support;

use std::collections::HashMap;
use std::path::Path;

use half::bf16;
use marlin_cpu::CpuBackend;
use marlin_engine::chat::Message;
use marlin_engine::generate::GenerateParams;
use marlin_engine::{Engine, EngineError, TextParams, Tokenizer};
use marlin_models::{
    Architecture, DenseTensor, KvCache, Model, ModelConfig, ModelError, Precision, SeqTokens,
    StoredTensor, Weight, WeightSource,
};
use marlin_testkit::rng::gaussian;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};
use tokenizer_support::smollm2_vocab;

const PROMPT: &str = "The capital of France is";
/// transformers' ids of PROMPT (tests/fixtures/tokenizer-reference.json).
const PROMPT_IDS: [u32; 5] = [504, 3575, 282, 4649, 314];
const IM_START: u32 = 1;
const IM_END: u32 = 2;

/// (name, shape, values) of every tensor.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size,
        hidden_size: 32,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 16,
        max_position_embeddings: 512,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: None,
        tie_word_embeddings: true,
        sliding_window: None,
        attention_bias: false,
        bos_token_id: Some(IM_START),
        eos_token_ids: vec![IM_END],
    }
}

fn config_json(c: &ModelConfig) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "bos_token_id": IM_START, "eos_token_id": IM_END
    })
}

/// Random weights, already rounded to BF16 (what the folder stores).
fn weights(c: &ModelConfig) -> Tensors {
    let shapes = marlin_models::llama::tensor_shapes(c, 0..c.num_hidden_layers).unwrap();
    shapes
        .into_iter()
        .zip(1..)
        .map(|((name, shape), seed)| {
            let std = if name.ends_with("norm.weight") {
                1.0
            } else {
                0.3
            };
            let values = gaussian(seed, shape.iter().product(), std)
                .into_iter()
                .map(|v| bf16::from_f32(v).to_f32())
                .collect();
            (name, shape, values)
        })
        .collect()
}

/// The folder, with tokenizer_config.json's fields given by `tokenizer_config`.
fn write_folder(dir: &Path, tokenizer_config: &Value) -> (ModelConfig, Tensors) {
    let tokenizer = Tokenizer::from_vocab(&smollm2_vocab()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_json().unwrap()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        tokenizer_config.to_string(),
    )
    .unwrap();
    let c = config(tokenizer.vocab_size());
    std::fs::write(dir.join("config.json"), config_json(&c).to_string()).unwrap();
    let w = weights(&c);
    let bytes: Vec<Vec<u8>> = w
        .iter()
        .map(|(_, _, v)| {
            v.iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect()
        })
        .collect();
    let views = w.iter().zip(&bytes).map(|((name, shape, _), b)| {
        (
            name.clone(),
            TensorView::new(Dtype::BF16, shape.clone(), b).unwrap(),
        )
    });
    let file = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    (c, w)
}

fn smollm2_tokenizer_config() -> Value {
    json!({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "chat_template": smollm2_vocab().chat_template.unwrap(),
    })
}

struct Memory(ModelConfig, HashMap<String, Weight>);

impl WeightSource for Memory {
    fn config(&self) -> &ModelConfig {
        &self.0
    }
    fn contains(&self, name: &str) -> bool {
        self.1.contains_key(name)
    }
    fn weight(&self, name: &str) -> Result<Weight, ModelError> {
        Ok(self.1[name].clone())
    }
    fn tensors(&self) -> Vec<StoredTensor> {
        Vec::new()
    }
}

/// Greedy continuation of `prompt` by the weights held in memory: argmax, token by token.
fn greedy_from_memory(c: ModelConfig, w: Tensors, prompt: &[u32], n: usize) -> Vec<u32> {
    let weights = w
        .into_iter()
        .map(|(name, shape, data)| (name, Weight::Dense(DenseTensor { shape, data })))
        .collect();
    let model = Model::load(&Memory(c, weights), CpuBackend::detect(), Precision::F32).unwrap();
    let mut cache = KvCache::new(model.config(), 16, 64);
    let seq = cache.add_sequence();
    let (mut out, mut next) = (Vec::new(), prompt.to_vec());
    for _ in 0..n {
        let logits = model
            .forward(&[SeqTokens { seq, tokens: &next }], &mut cache)
            .unwrap();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        out.push(best as u32);
        next = vec![best as u32];
    }
    out
}

fn greedy(max_tokens: usize) -> TextParams {
    TextParams {
        generate: GenerateParams {
            max_tokens,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn a_folder_loads_tokenizes_and_generates_as_its_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, w) = write_folder(tmp.path(), &smollm2_tokenizer_config());
    let engine = Engine::load_on(tmp.path(), CpuBackend::detect(), Precision::F32).unwrap();
    assert_eq!(engine.model().config(), &c);
    let prompt = engine.encode(PROMPT).unwrap();
    assert_eq!(prompt, PROMPT_IDS);
    let done = engine.generate(&prompt, &greedy(6), |_| {}).unwrap();
    let want = greedy_from_memory(c, w, &prompt, 6);
    // A random model may pick an end token: the engine stops there, before it.
    let until_stop: Vec<u32> = want.iter().copied().take_while(|&t| t != IM_END).collect();
    assert_eq!(done.token_ids, until_stop);
    assert!(
        until_stop.len() >= 2,
        "the seeds should give a run worth comparing: {want:?}"
    );
    assert_eq!(
        done.text,
        engine.tokenizer().decode(&done.token_ids, true).unwrap()
    );
}

#[test]
fn every_end_token_of_the_folder_stops_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, w) = write_folder(tmp.path(), &smollm2_tokenizer_config());
    let first = greedy_from_memory(c, w, &PROMPT_IDS, 1)[0];
    std::fs::write(
        tmp.path().join("generation_config.json"),
        json!({"eos_token_id": [first, 7]}).to_string(),
    )
    .unwrap();
    let engine = Engine::load_on(tmp.path(), CpuBackend::detect(), Precision::F32).unwrap();
    let mut stops = vec![IM_END, first, 7];
    stops.sort_unstable();
    stops.dedup();
    assert_eq!(engine.stop_token_ids(), stops);
    let done = engine.generate(&PROMPT_IDS, &greedy(6), |_| {}).unwrap();
    assert!(done.token_ids.is_empty(), "{:?}", done.token_ids);
    assert_eq!(done.finish_reason.as_str(), "stop");
}

#[test]
fn the_chat_template_comes_from_the_jinja_file_or_tokenizer_config() {
    let tmp = tempfile::tempdir().unwrap();
    let messages = [Message::user("Hi")];
    let smol = smollm2_vocab().chat_template.unwrap();
    // A list of named templates: "default" is used.
    let mut config = smollm2_tokenizer_config();
    config["chat_template"] = json!([
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": smol},
    ]);
    write_folder(tmp.path(), &config);
    let engine = Engine::load(tmp.path()).unwrap();
    let tokenizer = engine.tokenizer();
    let text = tokenizer
        .decode(&engine.encode_chat(&messages).unwrap(), false)
        .unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are a helpful AI assistant"),
        "{text}"
    );
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    // chat_template.jinja wins over tokenizer_config.json; bos_token and eos_token are the
    // tokenizer_config's.
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}",
    )
    .unwrap();
    let engine = Engine::load(tmp.path()).unwrap();
    assert_eq!(engine.encode_chat(&messages).unwrap()[0], IM_START);
    let ids = engine.encode_chat(&messages).unwrap();
    let text = engine.tokenizer().decode(&ids, false).unwrap();
    assert_eq!(text, "<|im_start|>Hi<|im_end|>");
    // No template anywhere: plain prompts still work, chat says why it cannot.
    std::fs::remove_file(tmp.path().join("chat_template.jinja")).unwrap();
    let mut config = smollm2_tokenizer_config();
    config.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(tmp.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let engine = Engine::load(tmp.path()).unwrap();
    let e = engine.encode_chat(&messages).unwrap_err();
    assert!(matches!(e, EngineError::NoChatTemplate { .. }), "{e}");
    // A template of the wrong type is an error naming the file.
    config["chat_template"] = json!(3);
    std::fs::write(tmp.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let e = Engine::load(tmp.path()).err().unwrap();
    assert!(matches!(e, EngineError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("tokenizer_config.json"), "{e}");
}

#[test]
fn add_bos_token_in_tokenizer_config_decides_the_bos() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = smollm2_tokenizer_config();
    config["add_bos_token"] = json!(true);
    write_folder(tmp.path(), &config);
    let engine = Engine::load(tmp.path()).unwrap();
    let mut with_bos = vec![IM_START];
    with_bos.extend(PROMPT_IDS);
    assert_eq!(engine.encode(PROMPT).unwrap(), with_bos);
    // Chat prompts are encoded without it: the template writes its own.
    let chat = engine.encode_chat(&[Message::user("Hi")]).unwrap();
    assert_eq!(&chat[..1], [IM_START]);
    assert_ne!(&chat[..2], [IM_START, IM_START]);
    config["add_bos_token"] = json!(false);
    config["add_eos_token"] = json!(true);
    std::fs::write(tmp.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let engine = Engine::load(tmp.path()).unwrap();
    let mut with_eos = PROMPT_IDS.to_vec();
    with_eos.push(IM_END);
    assert_eq!(engine.encode(PROMPT).unwrap(), with_eos);
}

#[test]
fn a_folder_without_tokenizer_json_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    write_folder(tmp.path(), &smollm2_tokenizer_config());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = Engine::load(tmp.path()).err().unwrap();
    assert!(matches!(e, EngineError::MissingFile { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("tokenizer.json"), "{text}");
    assert!(text.contains(&tmp.path().display().to_string()), "{text}");
    // And a folder that is no model at all says so through the model's error.
    let empty = tempfile::tempdir().unwrap();
    let e = Engine::load(empty.path()).err().unwrap();
    assert!(e.to_string().contains("config.json"), "{e}");
}
