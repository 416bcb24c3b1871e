//! The sampling flags that `generate` and `chat` share.

use clap::Args;
use marlin_engine::TextParams;
use marlin_engine::generate::GenerateParams;
use marlin_engine::sampler::SamplingParams;

#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Most new tokens (per reply, in chat).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Above 1 discourages repeating tokens already in the text.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed for sampling: the same seed gives the same text.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn text_params(&self) -> TextParams {
        TextParams {
            generate: GenerateParams {
                max_tokens: self.max_tokens,
                sampling: SamplingParams {
                    temperature: self.temperature,
                    top_k: self.top_k,
                    top_p: self.top_p,
                    min_p: self.min_p,
                    repetition_penalty: self.repetition_penalty,
                    seed: self.seed,
                    ..Default::default()
                },
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
        }
    }
}
