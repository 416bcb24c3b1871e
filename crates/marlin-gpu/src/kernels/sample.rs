//! Sampling with temperature, top-k, top-p and min-p over rows of logits (sample.wgsl): decode
//! reads back token ids, not logits, whatever the sampling.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use super::{Variants, grid, with_reductions};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCES: Variants = with_reductions!("sample.wgsl");

/// How one row's token is drawn: the tokens kept by top-k, top-p and min-p (applied in that
/// order, as marlin_engine's sampler), then the one whose share of their probability mass
/// (at `temperature`) holds `u`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleChoice {
    /// Above 0.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the fewest most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: none).
    pub min_p: f32,
    /// Uniform in [0, 1): the host's random draw for this row.
    pub u: f32,
}

impl SampleChoice {
    /// A draw at `temperature` from every token (no top-k, top-p or min-p), at u = 0.
    pub const fn plain(temperature: f32) -> Self {
        SampleChoice {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            u: 0.0,
        }
    }
}

/// Mirrors `Choice` in sample.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Choice {
    inv_t: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    u: f32,
    _pad: [u32; 3],
}

/// Mirrors `Params` in sample.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    _pad: [u32; 2],
}

impl Gpu {
    /// Records `out[r] = ` a token drawn from row `r` of `logits` (`rows` x `vocab`) under
    /// `choices[r]` (a u32 each). The same choices give the same tokens.
    // logits (rows, vocab) -> out (rows) u32
    pub fn sample(
        &self,
        encoder: &mut crate::Recorder,
        logits: &GpuBuffer,
        out: &GpuBuffer,
        vocab: usize,
        choices: &[SampleChoice],
    ) -> Result<(), GpuError> {
        const OP: &str = "sample";
        let rows = choices.len();
        let len = product(OP, "logits", rows, vocab)?;
        if vocab == 0 || vocab > u32::MAX as usize / 2 {
            return Err(shape_error(OP, format!("a vocabulary of {vocab} tokens")));
        }
        for (r, c) in choices.iter().enumerate() {
            let ok = c.temperature > 0.0
                && c.temperature.is_finite()
                && (0.0..=1.0).contains(&c.top_p)
                && c.top_p > 0.0
                && (0.0..=1.0).contains(&c.min_p)
                && (0.0..1.0).contains(&c.u);
            if !ok {
                return Err(shape_error(
                    OP,
                    format!(
                        "row {r}: {c:?}; needs temperature > 0, top_p in (0, 1], min_p in \
                         [0, 1] and u in [0, 1) (greedy decoding is Gpu::argmax)"
                    ),
                ));
            }
        }
        need(OP, "logits", logits, len as u64)?;
        need(OP, "out", out, rows as u64)?;
        apart(OP, ("out", out), &[("logits", logits)])?;
        self.bindable(OP, &[("logits", logits), ("out", out)])?;
        if rows == 0 {
            return Ok(());
        }
        let rows_data: Vec<Choice> = choices
            .iter()
            .map(|c| Choice {
                inv_t: 1.0 / c.temperature,
                top_k: c.top_k.min(u32::MAX as usize) as u32,
                top_p: c.top_p,
                min_p: c.min_p,
                u: c.u,
                _pad: [0; 3],
            })
            .collect();
        let choice_buf = self.upload("sample choices", bytemuck::cast_slice(&rows_data));
        let params = Params {
            rows: rows as u32,
            vocab: vocab as u32,
            _pad: [0; 2],
        };
        let pipe = self.row_pipeline(OP, &SOURCES);
        self.dispatch(
            encoder,
            &pipe,
            &params,
            &[logits, &choice_buf, out],
            grid(rows as u64, 1),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{read_u32, run, values};
    use super::*;

    /// The tokens marlin_engine's sampler may draw under `c` (sorted by logit, top-k, softmax,
    /// top-p, min-p), each with its probability, in f64.
    fn reference(row: &[f32], c: &SampleChoice) -> Vec<(usize, f64)> {
        let mut cands: Vec<(usize, f64)> = row
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, l as f64 / c.temperature as f64))
            .collect();
        cands.sort_by(|a, b| b.1.total_cmp(&a.1));
        if c.top_k > 0 {
            cands.truncate(c.top_k);
        }
        let max = cands[0].1;
        cands.iter_mut().for_each(|x| x.1 = (x.1 - max).exp());
        let total: f64 = cands.iter().map(|x| x.1).sum();
        cands.iter_mut().for_each(|x| x.1 /= total);
        if c.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = cands.iter().position(|x| {
                mass += x.1;
                mass >= c.top_p as f64
            });
            cands.truncate(keep.map_or(cands.len(), |k| k + 1));
        }
        let floor = cands[0].1 * c.min_p as f64;
        cands.retain(|x| x.1 >= floor);
        let total: f64 = cands.iter().map(|x| x.1).sum();
        cands.iter_mut().for_each(|x| x.1 /= total);
        cands
    }

    /// Draws of one row at `draws` evenly spaced u: the share of the draws each token got.
    fn shares(gpu: &Gpu, row: &[f32], c: SampleChoice, draws: usize) -> Vec<f64> {
        let vocab = row.len();
        let logits: Vec<f32> = (0..draws).flat_map(|_| row.iter().copied()).collect();
        let choices: Vec<SampleChoice> = (0..draws)
            .map(|i| SampleChoice {
                u: (i as f32 + 0.5) / draws as f32,
                ..c
            })
            .collect();
        let lb = gpu.upload_f32("logits", &logits);
        let out = gpu.zeros("ids", (draws * 4) as u64);
        run(gpu, |enc| {
            gpu.sample(enc, &lb, &out, vocab, &choices).unwrap()
        });
        let mut counts = vec![0f64; vocab];
        for id in read_u32(gpu, &out) {
            counts[id as usize] += 1.0 / draws as f64;
        }
        counts
    }

    /// Over evenly spaced u the draws follow the kept tokens' probabilities (within the
    /// spacing, plus f32 rounding), and never fall on a token the CPU sampler would not keep:
    /// for each filter alone and together, at two temperatures, on rows of odd lengths.
    #[test]
    fn draws_follow_the_kept_probabilities() {
        let Some(gpu) = crate::test_gpu() else { return };
        let base = SampleChoice::plain(1.0);
        let mut cases = vec![base];
        for temperature in [0.7, 1.3] {
            cases.push(SampleChoice {
                temperature,
                ..base
            });
            cases.push(SampleChoice {
                temperature,
                top_k: 5,
                ..base
            });
            cases.push(SampleChoice {
                temperature,
                top_p: 0.6,
                ..base
            });
            cases.push(SampleChoice {
                temperature,
                min_p: 0.2,
                ..base
            });
            cases.push(SampleChoice {
                temperature,
                top_k: 9,
                top_p: 0.8,
                min_p: 0.05,
                ..base
            });
        }
        let draws = 2000;
        for (seed, vocab) in [(3u64, 13usize), (4, 40), (5, 300)] {
            // Spread logits, without ties near a threshold (ties keep all of them).
            let row: Vec<f32> = values(seed, vocab, 3.0);
            for c in &cases {
                let want = reference(&row, c);
                let got = shares(&gpu, &row, *c, draws);
                for (i, &share) in got.iter().enumerate() {
                    let p = want.iter().find(|x| x.0 == i).map_or(0.0, |x| x.1);
                    assert!(
                        (share - p).abs() <= 1.5 / draws as f64 + 1e-4,
                        "{c:?} vocab {vocab} token {i}: drawn {share} against {p}"
                    );
                    if p == 0.0 {
                        assert_eq!(share, 0.0, "{c:?} token {i} is not kept");
                    }
                }
            }
        }
    }

    /// top_k 1 is the argmax; a tiny top_p too; the same choices give the same tokens; a
    /// vocabulary of 151936 works; bad choices are errors.
    #[test]
    fn edge_cases() {
        let Some(gpu) = crate::test_gpu() else { return };
        let vocab = 151_936;
        let row = values(9, vocab, 4.0);
        let best = (0..vocab).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
        let lb = gpu.upload_f32("logits", &row);
        let out = gpu.zeros("ids", 4);
        let draw = |c: SampleChoice| {
            run(&gpu, |enc| gpu.sample(enc, &lb, &out, vocab, &[c]).unwrap());
            read_u32(&gpu, &out)[0]
        };
        let c = SampleChoice {
            top_k: 1,
            u: 0.9,
            ..SampleChoice::plain(0.8)
        };
        assert_eq!(draw(c), best);
        assert_eq!(
            draw(SampleChoice {
                top_k: 0,
                top_p: 1e-6,
                ..c
            }),
            best
        );
        let open = SampleChoice { top_k: 0, ..c };
        assert_eq!(draw(open), draw(open));
        let e = gpu
            .sample(
                &mut gpu.encoder(),
                &lb,
                &out,
                vocab,
                &[SampleChoice {
                    temperature: 0.0,
                    ..c
                }],
            )
            .unwrap_err();
        assert!(e.to_string().contains("temperature > 0"), "{e}");
    }
}
