//! The library's front door: load a model file, then generate text from a prompt or a chat.
//!
//! ```no_run
//! use marlin_engine::{Engine, TextParams, chat::Message};
//!
//! // A GGUF file, or a Hugging Face folder (config.json, safetensors, tokenizer.json).
//! let engine = Engine::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let prompt = engine.encode_chat(&[Message::user("What is the capital of France?")])?;
//! let done = engine.generate(&prompt, &TextParams::default(), |text| print!("{text}"))?;
//! println!("\n{} tokens, {:?}", done.token_ids.len(), done.finish_reason);
//! # Ok::<(), marlin_engine::EngineError>(())
//! ```

use std::path::{Path, PathBuf};

use marlin_cpu::CpuBackend;
use marlin_models::{Hardware, Model, ModelError, Precision};
use thiserror::Error;

use crate::chat::{ChatTemplate, ChatTemplateError, Message};
use crate::generate::{FinishReason, Flow, GenerateParams, Generated, generate};
use crate::load;
use crate::tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Chat(#[from] ChatTemplateError),
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    #[error("{path}: the model has no chat template; generate without --chat")]
    NoChatTemplate { path: PathBuf },
    #[error(
        "the conversation needs {tokens} tokens but the model's context holds {context}: \
         start a new conversation or shorten it"
    )]
    ContextFull { tokens: usize, context: usize },
    #[error("{folder}: no {file}; {hint}")]
    MissingFile {
        folder: PathBuf,
        file: &'static str,
        hint: &'static str,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error(
        "--context {context} --stride {stride}: the context must be 2 to {max} tokens (the \
         model's limit) and the stride 1 to the context"
    )]
    Window {
        context: usize,
        stride: usize,
        max: usize,
    },
    #[error("the text is {tokens} token(s): perplexity needs at least 2; give a longer text")]
    TooFewTokens { tokens: usize },
}

/// Generation settings beyond tokens: [`GenerateParams`] plus stop strings.
#[derive(Debug, Clone, Default)]
pub struct TextParams {
    pub generate: GenerateParams,
    /// Text that ends generation; the output stops before it.
    pub stop_strings: Vec<String>,
}

/// The outcome of [`Engine::generate`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub prompt_token_ids: Vec<u32>,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Prompt tokens whose keys and values were already cached (a [`Session`](crate::Session)
    /// reusing an earlier turn), so not prefilled.
    pub cached_prompt_tokens: usize,
    /// Speed of prefilling the prompt tokens that were not cached.
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

/// A loaded model with its tokenizer and chat template.
pub struct Engine {
    path: PathBuf,
    model: Model,
    tokenizer: Tokenizer,
    chat: Option<ChatTemplate>,
    stop_token_ids: Vec<u32>,
}

impl Engine {
    /// Loads a GGUF file or a Hugging Face folder on the fastest CPU kernels at the default
    /// [`Precision`].
    pub fn load(path: impl AsRef<Path>) -> Result<Engine, EngineError> {
        Engine::load_on(path, CpuBackend::detect(), Precision::default())
    }

    /// Loads a GGUF file or a Hugging Face folder on `hardware` (a `CpuBackend`, a
    /// `marlin_gpu::Gpu`, or a [`Hardware`]); `precision` is the CPU's activations.
    pub fn load_on(
        path: impl AsRef<Path>,
        hardware: impl Into<Hardware>,
        precision: Precision,
    ) -> Result<Engine, EngineError> {
        let path = path.as_ref().to_path_buf();
        let parts = load::open(&path)?;
        let model = Model::load(parts.source.as_ref(), hardware, precision)?;
        let tokenizer = parts.tokenizer;
        let chat = match &parts.chat_template {
            Some(src) => {
                let bos = tokenizer.bos_token().unwrap_or_default();
                let eos = tokenizer.eos_token().unwrap_or_default();
                Some(ChatTemplate::new(src, bos, eos)?)
            }
            None => None,
        };
        // The configuration's end tokens (with generation_config.json's) and the tokenizer's.
        let mut stop_token_ids = model.config().eos_token_ids.clone();
        stop_token_ids.extend(tokenizer.eos_token_id());
        stop_token_ids.sort_unstable();
        stop_token_ids.dedup();
        Ok(Engine {
            path,
            model,
            tokenizer,
            chat,
            stop_token_ids,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's chat template, if its files have one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// Tokens that end generation (the model's end-of-sequence tokens).
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_token_ids
    }

    /// A plain prompt's tokens (with BOS when the tokenizer asks for it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        Ok(self.tokenizer.encode(text, true)?)
    }

    /// A conversation rendered by the model's chat template, ready for the assistant's turn.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>, EngineError> {
        let chat = self
            .chat
            .as_ref()
            .ok_or_else(|| EngineError::NoChatTemplate {
                path: self.path.clone(),
            })?;
        // The template writes any BOS itself, so the tokenizer must not add another.
        Ok(self
            .tokenizer
            .encode(&chat.render(messages, true)?, false)?)
    }

    /// Generates exactly `params.generate.max_tokens` tokens, ignoring end-of-sequence tokens:
    /// for speed measurements, where an early stop would shorten the run.
    pub fn generate_without_stops(
        &self,
        prompt: &[u32],
        params: &TextParams,
    ) -> Result<Completion, EngineError> {
        let done = generate(&self.model, prompt, &params.generate, |_| Flow::Continue)?;
        let (prefill_tokens_per_s, decode_tokens_per_s) = speeds(prompt.len(), &done);
        Ok(Completion {
            prompt_token_ids: prompt.to_vec(),
            cached_prompt_tokens: 0,
            prefill_tokens_per_s,
            decode_tokens_per_s,
            finish_reason: done.finish_reason,
            text: String::new(),
            token_ids: done.token_ids,
        })
    }

    /// Generates after `prompt`, calling `on_text` with each piece of text as soon as it is
    /// complete (never a broken UTF-8 character, never part of a stop string).
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &TextParams,
        on_text: impl FnMut(&str) + Send,
    ) -> Result<Completion, EngineError> {
        self.generate_text(prompt, 0, params, on_text, |gen_params, on_token| {
            generate(&self.model, prompt, gen_params, on_token)
        })
    }

    /// Text generation around a token loop `run` (fresh or over a cache already holding
    /// `cached` prompt tokens): stop tokens, detokenizing, stop strings, speeds.
    pub(crate) fn generate_text<R>(
        &self,
        prompt: &[u32],
        cached: usize,
        params: &TextParams,
        mut on_text: impl FnMut(&str) + Send,
        run: R,
    ) -> Result<Completion, EngineError>
    where
        R: FnOnce(
            &GenerateParams,
            &mut (dyn FnMut(u32) -> Flow + Send),
        ) -> Result<Generated, ModelError>,
    {
        let mut gen_params = params.generate.clone();
        gen_params.stop_token_ids.extend(&self.stop_token_ids);
        let mut detok = self.tokenizer.detokenizer(true).with_prompt(prompt)?;
        let mut text = StopText::new(&params.stop_strings);
        let mut failure = None;
        let done = run(&gen_params, &mut |token| match detok.push(token) {
            Ok(piece) => {
                let (ready, stop) = text.push(&piece);
                on_text(ready);
                if stop { Flow::Stop } else { Flow::Continue }
            }
            Err(e) => {
                failure = Some(e);
                Flow::Stop
            }
        })?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        if !text.stopped {
            let tail = detok.finish()?;
            let (ready, _) = text.push(&tail);
            on_text(ready);
            on_text(&text.flush());
        }
        let (prefill_tokens_per_s, decode_tokens_per_s) = speeds(prompt.len() - cached, &done);
        Ok(Completion {
            prompt_token_ids: prompt.to_vec(),
            cached_prompt_tokens: cached,
            prefill_tokens_per_s,
            decode_tokens_per_s,
            finish_reason: if text.stopped {
                FinishReason::Stop
            } else {
                done.finish_reason
            },
            token_ids: done.token_ids,
            text: text.all,
        })
    }
}

/// Prefill and decode tokens per second of a run of `prompt` tokens.
fn speeds(prompt: usize, done: &Generated) -> (f64, f64) {
    let per_s = |n: usize, t: std::time::Duration| n as f64 / t.as_secs_f64().max(1e-9);
    // The first new token comes from the prefill's logits; each later one costs a pass.
    let decoded = done.token_ids.len().saturating_sub(1);
    (
        per_s(prompt, done.prefill_time),
        per_s(decoded, done.decode_time),
    )
}

/// Streams text while watching for stop strings: holds back any tail that could still become
/// one, and cuts the text where one appears. (The scheduler keeps one per sequence.)
pub(crate) struct StopText {
    stops: Vec<String>,
    /// Everything released so far.
    all: String,
    /// Text not yet released because it may begin a stop string.
    held: String,
    pub(crate) stopped: bool,
    released: String,
}

impl StopText {
    pub(crate) fn new(stops: &[String]) -> Self {
        StopText {
            stops: stops.to_vec(),
            all: String::new(),
            held: String::new(),
            stopped: false,
            released: String::new(),
        }
    }

    /// Adds `piece`; returns the text now safe to show, and whether a stop string matched.
    pub(crate) fn push(&mut self, piece: &str) -> (&str, bool) {
        self.released.clear();
        if self.stopped {
            return (&self.released, true);
        }
        self.held.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        let keep_from = match hit {
            Some(at) => {
                self.stopped = true;
                self.held.truncate(at);
                at
            }
            None => self.held.len() - self.partial_stop_len(),
        };
        self.released.push_str(&self.held[..keep_from]);
        self.held.drain(..keep_from);
        self.all.push_str(&self.released);
        (&self.released, self.stopped)
    }

    /// What is still held, once no more text comes.
    pub(crate) fn flush(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        self.all.push_str(&rest);
        rest
    }

    /// The length of the longest tail of `held` that is a proper prefix of a stop string.
    fn partial_stop_len(&self) -> usize {
        let h = &self.held;
        self.stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(h.len() + 1))
                    .filter(move |&n| s.is_char_boundary(n))
                    .map(move |n| (s, n))
            })
            .filter(|(s, n)| h.is_char_boundary(h.len() - n) && h.ends_with(&s[..*n]))
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::StopText;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut t = StopText::new(&stops);
        let mut shown = Vec::new();
        for p in pieces {
            let (r, stop) = t.push(p);
            shown.push(r.to_string());
            if stop {
                return (shown, t.all, true);
            }
        }
        shown.push(t.flush());
        (shown, t.all, false)
    }

    #[test]
    fn a_stop_string_split_over_pieces_is_never_shown() {
        let (shown, all, stopped) = run(&["STOP"], &["Hello S", "TO", "P and more"]);
        assert!(stopped);
        assert_eq!(all, "Hello ");
        assert_eq!(shown.concat(), "Hello ");
    }

    #[test]
    fn a_false_start_is_released_when_it_cannot_match() {
        let (shown, all, stopped) = run(&["STOP"], &["a ST", "ATE"]);
        assert!(!stopped);
        assert_eq!(all, "a STATE");
        assert_eq!(shown, vec!["a ", "STATE", ""]);
    }

    #[test]
    fn without_stop_strings_everything_flows() {
        let (shown, all, stopped) = run(&[], &["x", "é", "y"]);
        assert!(!stopped);
        assert_eq!(
            (shown.concat(), all),
            ("xéy".to_string(), "xéy".to_string())
        );
    }
}
