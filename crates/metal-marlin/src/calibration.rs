//! GPTQ's calibration samples: a text (the user's, or the corpus built into the binary)
//! tokenized with the model's tokenizer and cut into samples of [`SAMPLE_TOKENS`].

use std::path::Path;

use anyhow::{Context, bail};
use marlin_models::checkpoint::Calibration;
use marlin_quant::GptqOptions;

/// The default corpus: English prose, dialogue, instructions and a little code written for
/// Metal Marlin and released under its licence (docs/quantization.md, "Calibration").
pub const DEFAULT_CORPUS: &str = include_str!("../data/calibration.txt");
pub const DEFAULT_CORPUS_NAME: &str =
    "the built-in corpus (crates/metal-marlin/data/calibration.txt)";

/// Tokens per sample: the context the evaluation uses, long enough for attention to see
/// realistic distances.
pub const SAMPLE_TOKENS: usize = 512;
/// Samples when `--samples` is not given: GPTQ's usual 128 (fewer when the text is shorter).
pub const DEFAULT_SAMPLES: usize = 128;

/// The calibration of `--calibration`, `--samples`, `--damp`, `--act-order` and
/// `--no-clip-search` for the model at `model` (whose tokenizer cuts the text).
pub fn load(
    model: &Path,
    file: Option<&Path>,
    samples: Option<usize>,
    damp: Option<f64>,
    act_order: bool,
    clip_search: bool,
) -> anyhow::Result<Calibration> {
    let (text, name) = match file {
        Some(f) => (
            std::fs::read_to_string(f).with_context(|| {
                format!("--calibration: reading {} (a UTF-8 text)", f.display())
            })?,
            f.display().to_string(),
        ),
        None => (DEFAULT_CORPUS.to_string(), DEFAULT_CORPUS_NAME.to_string()),
    };
    if samples == Some(0) {
        bail!("--samples 0: GPTQ needs at least one calibration sample");
    }
    let damp = damp.unwrap_or(GptqOptions::default().damp);
    if !(damp.is_finite() && (0.0..=1.0).contains(&damp)) {
        bail!(
            "--damp {damp}: give a fraction of the Hessian's mean diagonal between 0 and 1 (default 0.01)"
        );
    }
    let tokenizer = marlin_engine::load_tokenizer(model)
        .with_context(|| format!("loading the tokenizer of {}", model.display()))?;
    let ids = tokenizer
        .encode(&text, false)
        .with_context(|| format!("tokenizing {name}"))?;
    let samples = cut(&ids, samples.unwrap_or(DEFAULT_SAMPLES));
    if samples.is_empty() {
        bail!("--calibration {name} has no tokens: give a longer text");
    }
    eprintln!(
        "calibrating on {} sample(s) of up to {SAMPLE_TOKENS} tokens from {name} ({} tokens)",
        samples.len(),
        ids.len()
    );
    Ok(Calibration {
        samples,
        options: GptqOptions {
            damp,
            act_order,
            clip_search,
            ..GptqOptions::default()
        },
    })
}

/// Up to `n` consecutive windows of [`SAMPLE_TOKENS`]; a text shorter than one window gives one
/// shorter sample. Consecutive, not random: the same text always gives the same checkpoint.
fn cut(ids: &[u32], n: usize) -> Vec<Vec<u32>> {
    if ids.len() < SAMPLE_TOKENS {
        return if ids.is_empty() {
            vec![]
        } else {
            vec![ids.to_vec()]
        };
    }
    ids.chunks_exact(SAMPLE_TOKENS)
        .take(n)
        .map(<[u32]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_whole_windows_and_at_most_n() {
        let ids: Vec<u32> = (0..1300).collect();
        let s = cut(&ids, 128);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1][0], 512);
        assert_eq!(cut(&ids, 1).len(), 1);
        assert_eq!(cut(&ids[..10], 5), vec![ids[..10].to_vec()]);
        assert!(cut(&[], 5).is_empty());
    }
}
