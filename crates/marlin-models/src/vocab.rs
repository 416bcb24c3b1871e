//! A tokenizer's description as a model file stores it (GGUF's `tokenizer.ggml.*` keys): what
//! the engine needs to build an equivalent tokenizer without `tokenizer.json`.

/// The tokenizer stored in a model file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileVocab {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE), `llama` (SentencePiece), ...
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (`smollm`, `llama-bpe`, `qwen2`, ...).
    pub pre: String,
    /// Token strings by id.
    pub tokens: Vec<String>,
    /// GGUF token types by id: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Vec<i32>,
    /// BPE merges, `"left right"`, in priority order.
    pub merges: Vec<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub add_bos_token: bool,
    pub add_space_prefix: bool,
    /// `tokenizer.chat_template` (Jinja).
    pub chat_template: Option<String>,
}
