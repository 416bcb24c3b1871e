//! Rotary position embeddings, Hugging Face style (`rotate_half`: dimension `i` pairs with
//! `i + head_dim / 2`), with Llama 3.1's frequency-dependent scaling.

use crate::{ModelConfig, RopeScaling};

pub struct Rope {
    /// head_dim / 2 inverse frequencies.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &ModelConfig) -> Self {
        let half = config.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_theta
                    .powf(2.0 * i as f32 / config.head_dim as f32)
            })
            .map(|f| match &config.rope_scaling {
                Some(s) => llama3_scaled(f, s),
                None => f,
            })
            .collect();
        Rope { inv_freq }
    }

    /// The inverse frequency of each rotated pair (head_dim / 2 of them), scaling included:
    /// what a GPU kernel needs uploaded to rotate as this does.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Rotates every head of `x` (heads of head_dim) for position `pos`, in place.
    // x (heads * head_dim) -> same
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        rotate(x, pos, &self.inv_freq);
    }
}

/// Rotates every head of `x` (heads of `2 * inv_freq.len()` values) for position `pos`, in
/// place.
// x (heads * head_dim) -> same
pub fn rotate(x: &mut [f32], pos: usize, inv_freq: &[f32]) {
    let angles: Vec<_> = angles(pos, inv_freq).collect();
    rotate_by(x, &angles);
}

/// The (sin, cos) of each rotated pair's angle at position `pos`: what [`rotate_by`] takes, the
/// same for every layer of a pass.
pub fn angles(pos: usize, inv_freq: &[f32]) -> impl Iterator<Item = (f32, f32)> + '_ {
    // f32 like transformers: angle = pos * inv_freq in float32.
    inv_freq.iter().map(move |f| (pos as f32 * f).sin_cos())
}

/// Rotates every head of `x` (heads of `2 * angles.len()` values) by `angles` (from
/// [`angles`]), in place.
// x (heads * head_dim) -> same
pub fn rotate_by(x: &mut [f32], angles: &[(f32, f32)]) {
    let half = angles.len();
    for head in x.chunks_exact_mut(2 * half) {
        for (i, &(sin, cos)) in angles.iter().enumerate() {
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

/// Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
fn llama3_scaled(freq: f32, s: &RopeScaling) -> f32 {
    let old = s.original_max_position_embeddings as f32;
    let (low_wavelen, high_wavelen) = (old / s.low_freq_factor, old / s.high_freq_factor);
    let wavelen = 2.0 * std::f32::consts::PI / freq;
    if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / s.factor
    } else {
        let smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}
