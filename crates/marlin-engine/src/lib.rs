//! The engine: text in, text out. Tokenizer, chat template, sampler, generation loop.

pub mod default_model;
pub mod sampler;
