//! Choosing the next token from logits: greedy, or temperature with top-k, top-p and min-p,
//! after repetition, presence and frequency penalties. The same seed gives the same choices.

use marlin_models::device::{Penalty, SampleChoice};
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

    /// This step's choice for a device that picks the token itself
    /// ([`marlin_models::Model::forward_sample`], after the penalties of [`Sampler::seen`]): a
    /// draw at a temperature above 0 (taking this step's random draw), else the argmax
    /// ([`ARGMAX`]).
    pub fn device_choice(&mut self) -> SampleChoice {
        if self.params.temperature > 0.0 {
            self.choice()
        } else {
            ARGMAX
        }
    }

    /// The tokens of `history` with their counts and this sampler's penalties, for a device
    /// to apply; None where the parameters penalize nothing.
    pub fn seen(&self, history: &[u32]) -> Option<Seen> {
        let p = &self.params;
        p.penalizes().then(|| {
            let mut counts = std::collections::HashMap::<u32, u32>::new();
            for &t in history {
                *counts.entry(t).or_default() += 1;
            }
            Seen {
                repetition: p.repetition_penalty,
                presence: p.presence_penalty,
                frequency: p.frequency_penalty,
                counts: counts.into_iter().collect(),
            }
        })
    }

    /// This step's filters and random draw.
    fn choice(&mut self) -> SampleChoice {
        let p = &self.params;
        SampleChoice {
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
        let logits = match self.seen(history) {
            Some(seen) => marlin_models::device::penalize(logits, &seen.penalty()),
            None => logits.to_vec(),
        };
        if self.params.temperature <= 0.0 {
            return argmax(&logits);
        }
        let choice = self.choice();
        marlin_models::device::sample_row(&logits, &choice)
    }
}

/// The tokens a sequence has seen, with their counts, and its penalties: what a device needs
/// to penalize its logits where they are ([`Seen::penalty`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub repetition: f32,
    pub presence: f32,
    pub frequency: f32,
    /// (token, times seen), each token once.
    pub counts: Vec<(u32, u32)>,
}

impl Seen {
    pub fn penalty(&self) -> Penalty<'_> {
        Penalty {
            repetition: self.repetition,
            presence: self.presence,
            frequency: self.frequency,
            seen: &self.counts,
        }
    }
}

/// The choice that takes the argmax (top-k 1): what a greedy row asks of a device that draws.
pub const ARGMAX: SampleChoice = SampleChoice {
    top_k: 1,
    ..SampleChoice::plain(1.0)
};

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
