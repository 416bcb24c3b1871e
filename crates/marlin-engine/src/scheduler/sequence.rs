//! One running request: its tokens, sampler, detokenizer and stop strings.

use marlin_models::SeqId;

use super::{Event, Logprobs, Request, TokenOut};
use crate::detokenize::Detokenizer;
use crate::engine::StopText;
use crate::generate::FinishReason;
use crate::sampler::{Sampler, Seen};
use marlin_models::device::SampleChoice;

/// A device draw that is the argmax (top-k 1), for the rows of a drawing pass that do not
/// sample (greedy ones, and prefill chunks that choose nothing).
pub use crate::sampler::ARGMAX;

pub(super) struct Sequence {
    pub seq: SeqId,
    /// Prompt, then every generated token.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Positions reserved in the cache (prompt plus max_tokens).
    pub reserved: usize,
    max_tokens: usize,
    stop_token_ids: Vec<u32>,
    logprobs: Option<usize>,
    sampler: Sampler,
    detok: Detokenizer,
    text: StopText,
    pub sink: Box<dyn super::EventSink>,
}

/// What became of a sequence after a token.
pub(super) enum Outcome {
    Continue,
    /// Done: the final event, sent once its KV blocks are free (so that a client that sees
    /// it also sees the cache without it).
    Finished(Event),
    /// Its sink closed: the client went away.
    Cancelled,
}

impl Sequence {
    /// `detok` is seeded with the prompt.
    pub fn new(req: Request, seq: SeqId, detok: Detokenizer, eos: &[u32]) -> Self {
        let params = &req.params.generate;
        let mut stop_token_ids = params.stop_token_ids.clone();
        if req.stop_at_eos {
            stop_token_ids.extend(eos);
        }
        Sequence {
            seq,
            prompt_len: req.prompt.len(),
            reserved: req.prompt.len() + params.max_tokens,
            max_tokens: params.max_tokens,
            stop_token_ids,
            logprobs: req.logprobs,
            sampler: Sampler::new(params.sampling.clone()),
            detok,
            text: StopText::new(&req.params.stop_strings),
            tokens: req.prompt,
            sink: req.sink,
        }
    }

    /// Whether choosing this sequence's next token needs the logits: logprobs, or sampling on
    /// a device that does not draw (`device_draws` false) with anything but the plain argmax.
    /// Otherwise the argmax, or the device's penalties and draw ([`Sequence::device_choice`],
    /// [`Sequence::seen`]), is enough.
    pub fn needs_logits(&self, device_draws: bool) -> bool {
        self.logprobs.is_some() || !(self.sampler.params().is_greedy() || device_draws)
    }

    /// This step's choice for a draw on the device (taking the step's random draw; the argmax
    /// at temperature 0).
    pub fn device_choice(&mut self) -> SampleChoice {
        self.sampler.device_choice()
    }

    /// The penalties of this sequence's tokens so far, for the device to apply before its
    /// choice (None without penalties).
    pub fn seen(&self) -> Option<Seen> {
        self.sampler.seen(&self.tokens)
    }

    /// Whether this sequence's next token is drawn (not the argmax).
    pub fn draws(&self) -> bool {
        !self.sampler.params().is_greedy()
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Picks the next token from this sequence's logits (vocab).
    pub fn sample(&mut self, logits: &[f32]) -> TokenOut {
        let id = self.sampler.sample(logits, &self.tokens);
        let logprobs = self.logprobs.map(|n| logprobs(logits, id, n));
        TokenOut { id, logprobs }
    }

    /// Takes the chosen token: sends its text, and says whether the sequence goes on.
    pub fn accept(&mut self, token: TokenOut) -> Result<Outcome, String> {
        if self.stop_token_ids.contains(&token.id) {
            return Ok(self.finish(FinishReason::Stop));
        }
        self.tokens.push(token.id);
        let piece = self.detok.push(token.id).map_err(|e| e.to_string())?;
        let (ready, stopped) = self.text.push(&piece);
        let event = Event::Tokens {
            text: ready.to_owned(),
            tokens: vec![token],
        };
        if !self.sink.send(event) {
            return Ok(Outcome::Cancelled);
        }
        if stopped {
            return Ok(self.finish(FinishReason::Stop));
        }
        if self.generated() >= self.max_tokens {
            return Ok(self.finish(FinishReason::Length));
        }
        Ok(Outcome::Continue)
    }

    /// Sends what text is still held; returns the final event.
    fn finish(&mut self, reason: FinishReason) -> Outcome {
        if !self.text.stopped {
            let tail = self.detok.finish().unwrap_or_default();
            let (ready, _) = self.text.push(&tail);
            let mut rest = ready.to_owned();
            rest.push_str(&self.text.flush());
            if !rest.is_empty() {
                let tokens = Vec::new();
                self.sink.send(Event::Tokens { text: rest, tokens });
            }
        }
        if self.sink.is_closed() {
            return Outcome::Cancelled;
        }
        Outcome::Finished(Event::Done {
            finish_reason: reason,
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated(),
        })
    }
}

/// The chosen token's log-probability and the `n` most likely tokens' (log-softmax of the
/// logits).
fn logprobs(logits: &[f32], chosen: u32, n: usize) -> Logprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln() + max;
    let at = |id: u32| {
        logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |l| l - log_sum)
    };
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let n = n.min(ids.len());
    if n > 0 && n < ids.len() {
        ids.select_nth_unstable_by(n - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
    }
    ids.truncate(n);
    ids.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    Logprobs {
        logprob: at(chosen),
        top: ids.into_iter().map(|id| (id, at(id))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::logprobs;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_top_first() {
        let lp = logprobs(&[0.0, 2.0, 1.0], 2, 2);
        let total: f32 = [0.0f32, 2.0, 1.0].iter().map(|l| l.exp()).sum();
        assert!((lp.logprob - (1.0f32.exp() / total).ln()).abs() < 1e-5);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
