//! Repetition, presence and frequency penalties on the GPU (penalize.wgsl): the logits of the
//! tokens a sequence has seen, changed in place before its draw (`Gpu::sample`) or argmax, so
//! that a penalised sequence too reads back only its token id, not its row of logits.

use bytemuck::{Pod, Zeroable};

use super::view::{need, product};
use super::{WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("penalize.wgsl");

/// One row's penalties and the tokens its sequence has seen (prompt and output).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalty<'a> {
    /// Divides positive (multiplies negative) logits of seen tokens (1: off).
    pub repetition: f32,
    /// Subtracted once from the logits of seen tokens.
    pub presence: f32,
    /// Subtracted per occurrence.
    pub frequency: f32,
    /// (token, times seen), each token once.
    pub seen: &'a [(u32, u32)],
}

impl Penalty<'_> {
    /// `logit` of a token seen `count` times, as penalize.wgsl computes it.
    pub fn apply(&self, logit: f32, count: u32) -> f32 {
        let mut l = logit;
        if self.repetition != 1.0 {
            l = if l > 0.0 {
                l / self.repetition
            } else {
                l * self.repetition
            };
        }
        l - (self.presence + self.frequency * count as f32)
    }
}

/// Mirrors `Params` in penalize.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    vocab: u32,
    n: u32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `rows[r]`'s penalties on row `r` of `logits` (`rows.len()` x `vocab`), in
    /// place; rows without one are left as they are. Tokens at or past `vocab` are ignored.
    // logits (rows, vocab) -> logits (rows, vocab)
    pub fn penalize(
        &self,
        encoder: &mut crate::Recorder,
        logits: &GpuBuffer,
        vocab: usize,
        rows: &[Option<Penalty<'_>>],
    ) -> Result<(), GpuError> {
        const OP: &str = "penalize";
        let len = product(OP, "logits", rows.len(), vocab)?;
        need(OP, "logits", logits, len as u64)?;
        self.bindable(OP, &[("logits", logits)])?;
        let mut seen: Vec<[u32; 4]> = Vec::new();
        let mut params: Vec<[f32; 4]> = Vec::with_capacity(rows.len());
        for (r, p) in rows.iter().enumerate() {
            let Some(p) = p else {
                params.push([1.0, 0.0, 0.0, 0.0]);
                continue;
            };
            params.push([p.repetition, p.presence, p.frequency, 0.0]);
            seen.extend(
                p.seen
                    .iter()
                    .filter(|&&(t, _)| (t as usize) < vocab)
                    .map(|&(t, n)| [r as u32, t, n, 0]),
            );
        }
        if seen.is_empty() {
            return Ok(());
        }
        let seen_buf = self.upload("penalized tokens", bytemuck::cast_slice(&seen));
        let params_buf = self.upload("penalties", bytemuck::cast_slice(&params));
        let uniform = Params {
            vocab: vocab as u32,
            n: seen.len() as u32,
            _pad: [0; 2],
        };
        let pipe = self.pipeline(OP, SOURCE);
        self.dispatch(
            encoder,
            &pipe,
            &uniform,
            &[logits, &seen_buf, &params_buf],
            grid(seen.len() as u64, WG),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::values;

    /// Rows with and without penalties, repeated and unseen tokens, a token past the
    /// vocabulary: each logit as `Penalty::apply` makes it (the engine's formula), within a
    /// division's rounding, and every other logit untouched.
    #[test]
    fn penalizes_the_seen_tokens_of_each_row() {
        let Some(gpu) = crate::test_gpu() else { return };
        let vocab = 1000;
        let logits = values(7, 3 * vocab, 4.0);
        let a = [(3u32, 1u32), (999, 4), (17, 2), (5000, 1)];
        let b = [(3u32, 2u32), (0, 1)];
        let rows = [
            Some(Penalty {
                repetition: 1.3,
                presence: 0.5,
                frequency: 0.25,
                seen: &a,
            }),
            None,
            Some(Penalty {
                repetition: 1.0,
                presence: -0.75,
                frequency: 0.0,
                seen: &b,
            }),
        ];
        let buf = gpu.upload_f32("logits", &logits);
        let mut enc = gpu.encoder();
        gpu.penalize(&mut enc, &buf, vocab, &rows).unwrap();
        gpu.submit(enc);
        let got = gpu.read_f32(&buf).unwrap();
        let mut want = logits.clone();
        for (r, p) in rows.iter().enumerate() {
            for &(t, n) in p.map_or(&[][..], |p| p.seen) {
                if (t as usize) < vocab {
                    let at = r * vocab + t as usize;
                    want[at] = p.unwrap().apply(logits[at], n);
                }
            }
        }
        let changed = got.iter().zip(&logits).filter(|(g, l)| g != l).count();
        assert_eq!(changed, 5, "three tokens of row 0 and two of row 2");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "logit {i}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn a_short_buffer_is_an_error() {
        let Some(gpu) = crate::test_gpu() else { return };
        let buf = gpu.zeros("logits", 16);
        let seen = [(1u32, 1u32)];
        let row = Some(Penalty {
            repetition: 2.0,
            presence: 0.0,
            frequency: 0.0,
            seen: &seen,
        });
        let mut enc = gpu.encoder();
        assert!(gpu.penalize(&mut enc, &buf, 8, &[row]).is_err());
    }
}
