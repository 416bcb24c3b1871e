//! The engine: text in, text out. Tokenizer, chat template, sampler, generation loop.
//!
//! Start with [`Engine`]: load a model (a GGUF file or a Hugging Face folder), encode a prompt
//! or a chat, generate; a [`Session`] keeps a conversation's KV cache between turns.

mod engine;
pub mod generate;
mod load;
pub mod perplexity;
pub mod sampler;
pub mod scheduler;

/// The embedded default model (lives with the model files in `marlin-models`).
pub use marlin_models::default_model;

pub mod chat;
mod detokenize;
mod session;
mod tokenizer;

pub use chat::{ChatTemplate, ChatTemplateError, Message};
pub use detokenize::Detokenizer;
pub use engine::{Completion, Engine, EngineError, TextParams};
pub use load::{load_tokenizer, tokenizer_files};
pub use session::Session;
pub use tokenizer::{Tokenizer, TokenizerError};
