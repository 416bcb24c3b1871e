//! The configuration of a model, with Hugging Face `config.json` field names (DESIGN.md house
//! rule 4): every loader translates its own metadata into this.

/// Model families that share one model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 1/2/3/3.1, SmolLM, and Mistral (same graph).
    Llama,
    Mistral,
    /// Llama with biases on q, k and v.
    Qwen2,
    /// Llama with RMSNorm on each head of q and k.
    Qwen3,
}

/// Llama 3.1's frequency-dependent rope scaling (`rope_scaling` with `rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// What a model is, in Hugging Face terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Mistral's sliding-window attention: a token attends to itself and the
    /// `sliding_window - 1` tokens before it (None: to every earlier token).
    pub sliding_window: Option<usize>,
    /// Biases on q_proj, k_proj and v_proj (Qwen2).
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
}
