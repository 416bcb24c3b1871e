//! The generation loop for one sequence: prefill the prompt in chunks, then decode token by
//! token until a stop token, the caller, or the token budget says stop.

use std::time::{Duration, Instant};

use marlin_models::{KvCache, Model, ModelError, SeqId, SeqTokens};

use crate::sampler::{Sampler, SamplingParams, Seen};

/// What to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Most new tokens.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Tokens that end generation (not included in the output).
    pub stop_token_ids: Vec<u32>,
    /// Prompt tokens per forward pass while prefilling: bounds the activations' memory.
    pub prefill_chunk: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop_token_ids: Vec::new(),
            prefill_chunk: 512,
        }
    }
}

/// Why generation ended, as the OpenAI API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// The token budget.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The outcome of [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prefill_time: Duration,
    /// From the first sampled token to the last.
    pub decode_time: Duration,
}

/// What the caller wants after seeing a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here (a stop string matched): the token is kept, finish reason `stop`.
    Stop,
}

/// Generates from `prompt` (token ids, at least one) with `model`, calling `on_token` with
/// every new token as soon as it is chosen.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    params: &GenerateParams,
    on_token: impl FnMut(u32) -> Flow + Send,
) -> Result<Generated, ModelError> {
    let capacity = prompt.len() + params.max_tokens + 1;
    let mut cache = model.new_cache(16, capacity)?;
    let seq = cache.add_sequence();
    generate_cached(model, &mut cache, seq, prompt, params, on_token)
}

/// [`generate`] continuing sequence `seq` of `cache`, which already holds the first
/// `cache.len(seq)` tokens of `prompt` (fewer than all of them: the last prompt token's logits
/// are needed): only the rest is prefilled. Afterwards the cache holds the prompt and every
/// new token but the last.
///
/// The loop runs on a rayon worker: a parallel call made from outside the pool parks the
/// caller on a futex until the pool is done, and a decode step makes hundreds of them.
pub fn generate_cached(
    model: &Model,
    cache: &mut KvCache,
    seq: SeqId,
    prompt: &[u32],
    params: &GenerateParams,
    on_token: impl FnMut(u32) -> Flow + Send,
) -> Result<Generated, ModelError> {
    rayon::scope(|_| generate_here(model, cache, seq, prompt, params, on_token))
}

fn generate_here(
    model: &Model,
    cache: &mut KvCache,
    seq: SeqId,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(u32) -> Flow,
) -> Result<Generated, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::Config {
            path: Default::default(),
            what: "the prompt has no tokens; give at least one".into(),
        });
    }
    let cached = cache.len(seq);
    if prompt.len() <= cached {
        return Err(ModelError::Config {
            path: Default::default(),
            what: format!(
                "the prompt has {} tokens and {cached} are cached; give at least one new token",
                prompt.len()
            ),
        });
    }
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut history = prompt.to_vec();
    // Greedy decoding takes the argmax where the model runs, and a GPU applies penalties and
    // draws sampled tokens itself (it then reads back a token id, not the logits); sampling
    // on the CPU takes the logits to the host's sampler.
    let greedy = params.sampling.is_greedy();
    let on_gpu = model.gpu().is_some();
    let step = |tokens: &[u32], cache: &mut KvCache, sampler: &mut Sampler, history: &[u32]| {
        let batch = [SeqTokens { seq, tokens }];
        Ok::<_, ModelError>(if greedy {
            Next::Token(model.forward_greedy(&batch, cache)?[0])
        } else if on_gpu {
            let seen = sampler.seen(history);
            let penalty = [seen.as_ref().map(Seen::penalty)];
            let choice = [sampler.device_choice()];
            Next::Token(model.forward_sample(&batch, cache, &choice, &penalty)?[0])
        } else {
            Next::Logits(model.forward(&batch, cache)?)
        })
    };
    let start = Instant::now();
    let mut chunks = prompt[cached..]
        .chunks(params.prefill_chunk.max(1))
        .peekable();
    let mut next = Next::Logits(Vec::new());
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_some() {
            // An earlier chunk only fills the cache: its cheapest output (an argmax on the
            // device) is dropped, and no random number is drawn for it, so a seed gives the same
            // tokens whatever the chunk size.
            model.forward_greedy(&[SeqTokens { seq, tokens: chunk }], cache)?;
        } else {
            next = step(chunk, cache, &mut sampler, &history)?;
        }
    }
    let prefill_time = start.elapsed();
    let decode_start = Instant::now();
    let mut out = Vec::new();
    let mut finish = FinishReason::Length;
    while out.len() < params.max_tokens {
        let token = match &next {
            Next::Token(t) => *t,
            Next::Logits(logits) => sampler.sample(logits, &history),
        };
        if params.stop_token_ids.contains(&token) {
            finish = FinishReason::Stop;
            break;
        }
        out.push(token);
        history.push(token);
        if on_token(token) == Flow::Stop {
            finish = FinishReason::Stop;
            break;
        }
        if out.len() == params.max_tokens {
            break;
        }
        next = step(&[token], cache, &mut sampler, &history)?;
    }
    Ok(Generated {
        token_ids: out,
        finish_reason: finish,
        prefill_time,
        decode_time: decode_start.elapsed(),
    })
}

/// What a forward pass gives the sampler: the chosen token (greedy, on the model's device) or
/// the logits to sample from.
enum Next {
    Token(u32),
    Logits(Vec<f32>),
}
