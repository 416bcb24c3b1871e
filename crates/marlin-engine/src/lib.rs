//! The engine: text in, text out. Tokenizer, chat template, sampler, generation loop.

pub mod default_model;
pub mod sampler;

mod chat;
mod detokenize;
mod tokenizer;

pub use chat::{ChatTemplate, ChatTemplateError, Message};
pub use detokenize::Detokenizer;
pub use tokenizer::{Tokenizer, TokenizerError};
