//! The engine: text in, text out. Tokenizer, chat template, sampler, generation loop.

pub mod sampler;
