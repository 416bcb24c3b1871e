//! Choosing the next token from logits: greedy, or temperature with top-k, top-p and min-p,
//! after repetition, presence and frequency penalties. The same seed gives the same choices.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How to pick tokens. The defaults are greedy decoding with no penalties.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy (argmax); above 0 divides the logits before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of tokens already seen (1: off), as
    /// transformers and llama.cpp do.
    pub repetition_penalty: f32,
    /// Subtracted once from the logits of tokens already seen (OpenAI's presence penalty).
    pub presence_penalty: f32,
    /// Subtracted per occurrence (OpenAI's frequency penalty).
    pub frequency_penalty: f32,
    /// Seed of the random choices; `None` takes one from the system.
    pub seed: Option<u64>,
}

impl SamplingParams {
    /// Whether the choice is the plain argmax of the logits (greedy, no penalties): what
    /// [`marlin_models::Model::forward_greedy`] computes on the model's device.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 && !self.penalizes()
    }

    /// Whether the choice is a draw from the logits as they are (temperature above 0, no
    /// penalties): what [`marlin_models::Model::forward_sample`] draws on the model's device.
    pub fn draws_without_history(&self) -> bool {
        self.temperature > 0.0 && !self.penalizes()
    }

    /// Whether the tokens so far change the logits (a repetition, presence or frequency
    /// penalty).
    fn penalizes(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        Sampler { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The choice for a device that draws the token itself
    /// ([`marlin_models::Model::forward_sample`]), taking this step's random draw, where the
    /// choice needs no history: temperature above 0 and no penalties. None otherwise (greedy,
    /// or penalties: [`Sampler::sample`] on the host).
    pub fn device_choice(&mut self) -> Option<marlin_models::device::SampleChoice> {
        if self.params.draws_without_history() {
            Some(self.choice())
        } else {
            None
        }
    }

    /// This step's filters and random draw.
    fn choice(&mut self) -> marlin_models::device::SampleChoice {
        let p = &self.params;
        marlin_models::device::SampleChoice {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p.clamp(f32::MIN_POSITIVE, 1.0),
            min_p: p.min_p.clamp(0.0, 1.0),
            u: self.rng.random::<f32>(),
        }
    }

    /// The next token given the logits (vocab) and the tokens so far (prompt and output): the
    /// penalties, then the argmax (temperature 0) or a draw from the distribution the devices
    /// share ([`marlin_models::device::sample_row`]: top-k, top-p and min-p, ties at a
    /// threshold kept).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        self.penalize(&mut logits, history);
        if self.params.temperature <= 0.0 {
            return argmax(&logits);
        }
        let choice = self.choice();
        marlin_models::device::sample_row(&logits, &choice)
    }

    fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if !p.penalizes() {
            return;
        }
        let mut counts = std::collections::HashMap::<u32, u32>::new();
        for &t in history {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if p.repetition_penalty != 1.0 {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
            *l -= p.presence_penalty + p.frequency_penalty * n as f32;
        }
    }
}

/// The index of the largest logit (the first one on ties).
pub use marlin_models::device::argmax;

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.5, 2.9]
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&logits(), &[]), 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let params = SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..Default::default()
        };
        let (mut a, mut b) = (Sampler::new(params.clone()), Sampler::new(params));
        let xs: Vec<u32> = (0..50).map(|_| a.sample(&logits(), &[])).collect();
        let ys: Vec<u32> = (0..50).map(|_| b.sample(&logits(), &[])).collect();
        assert_eq!(xs, ys);
        assert!(
            xs.iter().any(|&t| t != xs[0]),
            "temperature 1 should vary: {xs:?}"
        );
    }

    #[test]
    fn top_k_one_is_greedy() {
        let params = SamplingParams {
            temperature: 5.0,
            top_k: 1,
            seed: Some(1),
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        assert!((0..100).all(|_| s.sample(&logits(), &[]) == 1));
    }

    #[test]
    fn top_p_and_min_p_drop_unlikely_tokens() {
        for params in [
            SamplingParams {
                temperature: 1.0,
                top_p: 0.5,
                seed: Some(3),
                ..Default::default()
            },
            SamplingParams {
                temperature: 1.0,
                min_p: 0.8,
                seed: Some(3),
                ..Default::default()
            },
        ] {
            let mut s = Sampler::new(params.clone());
            // Tokens 1 (3.0) and 4 (2.9) are nearly even; the rest fall below both cuts.
            assert!(
                (0..200).all(|_| matches!(s.sample(&logits(), &[]), 1 | 4)),
                "{params:?}"
            );
        }
    }

    #[test]
    fn repetition_penalty_moves_the_choice() {
        let params = SamplingParams {
            repetition_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        // 3.0 / 1.5 = 2.0 < 2.9: token 4 wins once token 1 was seen.
        assert_eq!(s.sample(&logits(), &[1]), 4);
    }
}
