//! Perplexity of a model on a text, by sliding windows (as Hugging Face's perplexity guide):
//! windows of `context` tokens start every `stride` tokens, and each window scores only the
//! tokens no earlier window scored, each predicted from the tokens before it in its window. With
//! `stride == context` the windows do not overlap (fastest); a smaller stride gives each scored
//! token more context.
//!
//! A token is scored at most once, and only with at least one token of context: the first
//! token of the text, and with `stride == context` the first token of every window, are not
//! scored (as in the guide). Unlike the guide's code, which subtracts one token per window for
//! the label shift even where the shift drops none, the count is exact.

use marlin_models::{Model, SeqTokens};

use crate::EngineError;

/// Tokens per forward pass within a window: a window is prefilled in chunks through the KV
/// cache, so the logits held at once stay `CHUNK x vocab` (63 MiB at Llama 3's vocabulary of 128,256)
/// whatever the context, within a GPU's binding limits.
const CHUNK: usize = 128;

/// The outcome of [`perplexity`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(nll / tokens)`.
    pub perplexity: f64,
    /// Tokens scored: all but the first with `stride < context`; with `stride == context`,
    /// all but the first of each window.
    pub tokens: usize,
    /// Sum of the scored tokens' negative log-likelihoods (natural log).
    pub nll: f64,
}

/// The windows `(begin, end, first_scored)`: tokens `begin..end` are run, and the predictions of
/// tokens `first_scored..end` are scored.
pub fn windows(n: usize, context: usize, stride: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < n {
        let end = (begin + context).min(n);
        out.push((begin, end, prev_end.max(begin + 1)));
        prev_end = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    out
}

/// The perplexity of `model` on `ids`; `progress(done, total)` after each window.
// ids (n) -> scalar
pub fn perplexity(
    model: &Model,
    ids: &[u32],
    context: usize,
    stride: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity, EngineError> {
    let max = model.config().max_position_embeddings;
    if context < 2 || stride == 0 || stride > context || context > max {
        return Err(EngineError::Window {
            context,
            stride,
            max,
        });
    }
    if ids.len() < 2 {
        return Err(EngineError::TooFewTokens { tokens: ids.len() });
    }
    let windows = windows(ids.len(), context, stride);
    let mut cache = model.new_cache(16, context)?;
    let (mut nll, mut tokens) = (0f64, 0usize);
    for (i, &(begin, end, first)) in windows.iter().enumerate() {
        let seq = cache.add_sequence();
        let scored = score_window(model, &mut cache, seq, ids, (begin, end, first));
        cache.remove_sequence(seq);
        nll += scored?;
        tokens += end - first;
        progress(i + 1, windows.len());
    }
    Ok(Perplexity {
        perplexity: (nll / tokens as f64).exp(),
        tokens,
        nll,
    })
}

/// The summed negative log-likelihood of tokens `first..end`, running `begin..end` in chunks.
// ids[begin..end] -> scalar
fn score_window(
    model: &Model,
    cache: &mut marlin_models::KvCache,
    seq: marlin_models::SeqId,
    ids: &[u32],
    (begin, end, first): (usize, usize, usize),
) -> Result<f64, EngineError> {
    let mut nll = 0f64;
    for start in (begin..end).step_by(CHUNK) {
        let stop = (start + CHUNK).min(end);
        let batch = [SeqTokens {
            seq,
            tokens: &ids[start..stop],
        }];
        let logits = model.forward_all(&batch, cache)?;
        let vocab = logits.len() / (stop - start);
        // The logits at position p predict token p + 1.
        for p in start.max(first - 1)..stop.min(end - 1) {
            let row = &logits[(p - start) * vocab..][..vocab];
            nll += negative_log_likelihood(row, ids[p + 1] as usize);
        }
    }
    Ok(nll)
}

/// `-log softmax(logits)[target]`, in f64 (a sum over tens of thousands of terms).
// logits (vocab) -> scalar
pub fn negative_log_likelihood(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - logits.get(target).copied().unwrap_or(f32::NAN) as f64
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    fn every_token_with_context_is_scored_once() {
        for (n, context, stride) in [(10, 4, 2), (10, 4, 3), (3, 8, 8), (9, 4, 1)] {
            let w = windows(n, context, stride);
            let scored: Vec<usize> = w.iter().flat_map(|&(_, end, first)| first..end).collect();
            assert_eq!(scored, (1..n).collect::<Vec<_>>(), "{n} {context} {stride}");
            for &(begin, end, first) in &w {
                assert!(end - begin <= context && begin < first, "{w:?}");
            }
        }
        assert_eq!(
            windows(10, 4, 2),
            [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
        );
    }
}
