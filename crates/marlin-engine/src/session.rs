//! A conversation that keeps its KV cache between turns: each prompt prefills only what follows
//! the longest prefix it shares with the tokens already cached.
//!
//! ```no_run
//! use marlin_engine::{Engine, TextParams, chat::Message};
//!
//! let engine = Engine::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let mut session = engine.session()?;
//! let mut history = vec![Message::user("What is the capital of France?")];
//! let done = session.generate(&engine.encode_chat(&history)?, &TextParams::default(), |_| {})?;
//! history.push(Message::assistant(done.text));
//! history.push(Message::user("And of Italy?"));
//! // Only the tokens after the first answer are prefilled.
//! let done = session.generate(&engine.encode_chat(&history)?, &TextParams::default(), |_| {})?;
//! assert!(done.cached_prompt_tokens > 0);
//! # Ok::<(), marlin_engine::EngineError>(())
//! ```
//!
//! Reuse is by token ids, not by messages, so it needs nothing from the chat template: where a
//! re-rendered history differs from what was generated (a reply that re-tokenizes differently,
//! a template that rewrites earlier turns), the cache is cut there and the rest is prefilled.

use marlin_models::{KvCache, SeqId};

use crate::generate::generate_cached;
use crate::{Completion, Engine, EngineError, TextParams};

/// Positions per KV-cache block; memory is taken block by block as the conversation grows.
const BLOCK: usize = 16;

/// One conversation with an [`Engine`], holding the keys and values of its tokens so far.
pub struct Session<'e> {
    engine: &'e Engine,
    cache: KvCache,
    seq: SeqId,
    /// The tokens whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    context: usize,
}

impl Engine {
    /// A new, empty conversation, able to grow to the model's context length (on a GPU, to
    /// what its cache budget holds).
    pub fn session(&self) -> Result<Session<'_>, EngineError> {
        let config = self.model().config();
        // A configuration without a context length bounds nothing.
        let context = match config.max_position_embeddings {
            0 => usize::MAX,
            n => n,
        };
        // A GPU claims its cache up front: as much of the context as its budget allows.
        let context = context.min(self.model().max_cache_tokens());
        let mut cache = self.model().new_cache(BLOCK, context)?;
        let seq = cache.add_sequence();
        Ok(Session {
            engine: self,
            cache,
            seq,
            cached: Vec::new(),
            context,
        })
    }
}

impl Session<'_> {
    /// The most tokens a conversation can hold: prompt and replies together.
    pub fn context_len(&self) -> usize {
        self.context
    }

    /// Tokens whose keys and values are cached now.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// Forgets everything cached: the next prompt is prefilled whole.
    pub fn reset(&mut self) {
        self.cache.truncate(self.seq, 0);
        self.cached.clear();
    }

    /// [`Engine::generate`] reusing the cached prefix of `prompt` (typically the whole
    /// conversation rendered by the chat template, ready for the assistant's turn). New
    /// tokens stop at the context length (finish reason `length`); a prompt that fills the
    /// context is [`EngineError::ContextFull`].
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &TextParams,
        on_text: impl FnMut(&str) + Send,
    ) -> Result<Completion, EngineError> {
        if prompt.len() >= self.context {
            return Err(EngineError::ContextFull {
                tokens: prompt.len(),
                context: self.context,
            });
        }
        // At least one prompt token must be prefilled: its logits choose the first new token.
        let shared = self
            .cached
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.cache.truncate(self.seq, shared);
        self.cached.truncate(shared);
        let mut params = params.clone();
        let room = self.context - prompt.len();
        params.generate.max_tokens = params.generate.max_tokens.min(room);
        let Session {
            engine, cache, seq, ..
        } = self;
        let result = engine.generate_text(prompt, shared, &params, on_text, |p, on_token| {
            generate_cached(engine.model(), cache, *seq, prompt, p, on_token)
        });
        match &result {
            Ok(done) => {
                // The cache holds the prompt and the new tokens but (usually) the last one.
                let held = self.cache.len(self.seq);
                self.cached = prompt
                    .iter()
                    .chain(&done.token_ids)
                    .copied()
                    .take(held)
                    .collect();
            }
            // What a failed pass left behind is unknown: start clean.
            Err(_) => self.reset(),
        }
        result
    }
}
