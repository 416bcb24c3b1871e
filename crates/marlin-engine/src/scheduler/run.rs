//! The batching thread: admit, step, retire, until the scheduler is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use marlin_models::{KvCache, SeqTokens};

use super::sequence::{ARGMAX, Outcome, Sequence};
use super::{Event, Shared, TokenOut};
use crate::engine::Engine;
use crate::sampler::Seen;
use marlin_models::device::{Penalty, SampleChoice};

pub(super) struct Batcher {
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    cache: KvCache,
    running: Vec<Sequence>,
    /// Cache positions reserved by the running sequences.
    reserved: usize,
}

/// What one step runs for a sequence: `tokens[from..to]` of `running[index]`.
struct Slot {
    index: usize,
    from: usize,
    to: usize,
}

impl Batcher {
    pub fn new(engine: Arc<Engine>, shared: Arc<Shared>, cache: KvCache) -> Self {
        Batcher {
            engine,
            shared,
            cache,
            running: Vec::new(),
            reserved: 0,
        }
    }

    pub fn run(mut self) {
        while self.admit() {
            self.drop_cancelled();
            if !self.running.is_empty() {
                // Each step runs on a rayon worker: a parallel call made from outside the pool
                // parks the caller on a futex, and a step makes hundreds of them.
                rayon::scope(|_| self.step());
            }
            self.publish();
        }
        self.fail_all("the server is shutting down");
    }

    /// Moves waiting requests into the batch while it and the cache have room; sleeps while
    /// there is nothing to do. `false` once the scheduler is stopping.
    fn admit(&mut self) -> bool {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut queue = shared.lock();
        while self.running.is_empty() && queue.waiting.is_empty() && !queue.stopping {
            queue = shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
        }
        if queue.stopping {
            drop(queue);
            return false;
        }
        while self.running.len() < config.max_batch {
            let Some(front) = queue.waiting.front() else {
                break;
            };
            if front.sink.is_closed() {
                queue.waiting.pop_front();
                continue;
            }
            let need = front.prompt.len() + front.params.generate.max_tokens;
            if self.reserved + need > config.kv_cache_tokens {
                break;
            }
            let Some(mut req) = queue.waiting.pop_front() else {
                break;
            };
            let detok = self.engine.tokenizer().detokenizer(true);
            match detok.with_prompt(&req.prompt) {
                Ok(detok) => {
                    let seq = self.cache.add_sequence();
                    let eos = self.engine.stop_token_ids();
                    let s = Sequence::new(req, seq, detok, eos);
                    self.reserved += s.reserved;
                    self.running.push(s);
                }
                Err(e) => {
                    req.sink.send(Event::Failed(e.to_string()));
                }
            }
        }
        true
    }

    /// Frees the sequences whose clients went away.
    fn drop_cancelled(&mut self) {
        let closed: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.running[i].sink.is_closed())
            .collect();
        self.retire(closed);
    }

    /// One forward pass over every running sequence, then each one's next token.
    fn step(&mut self) {
        let slots = self.plan();
        // Sequences whose chunk reaches their last token choose a next token now.
        let sampling: Vec<bool> = slots
            .iter()
            .map(|s| s.to == self.running[s.index].tokens.len())
            .collect();
        // A GPU draws sampled tokens itself: then only logprobs and penalties need the logits.
        let model = self.engine.model();
        let device_draws = model.gpu().is_some();
        let choosing = || {
            slots
                .iter()
                .zip(&sampling)
                .filter(|&(_, &samples)| samples)
                .map(|(s, _)| &self.running[s.index])
        };
        let needs_logits = choosing().any(|seq| seq.needs_logits(device_draws));
        let draws = !needs_logits && choosing().any(|seq| seq.draws());
        // The draws' choices (each taking its sequence's random draw) and the penalized rows'
        // tokens so far (applied on the device before the draw), before the batch borrows the
        // sequences' tokens; rows that choose nothing now take the argmax.
        let (choices, seen): (Vec<SampleChoice>, Vec<Option<Seen>>) = if draws {
            slots
                .iter()
                .zip(&sampling)
                .map(|(s, &samples)| match samples {
                    true => {
                        let seq = &mut self.running[s.index];
                        (seq.device_choice(), seq.seen())
                    }
                    false => (ARGMAX, None),
                })
                .unzip()
        } else {
            Default::default()
        };
        let penalties: Vec<Option<Penalty>> =
            seen.iter().map(|s| s.as_ref().map(Seen::penalty)).collect();
        let batch: Vec<SeqTokens> = slots
            .iter()
            .map(|s| SeqTokens {
                seq: self.running[s.index].seq,
                tokens: &self.running[s.index].tokens[s.from..s.to],
            })
            .collect();
        let result = if needs_logits {
            model.forward(&batch, &mut self.cache).map(Choice::Logits)
        } else if draws {
            model
                .forward_sample(&batch, &mut self.cache, &choices, &penalties)
                .map(Choice::Argmax)
        } else {
            model
                .forward_greedy(&batch, &mut self.cache)
                .map(Choice::Argmax)
        };
        self.shared.steps.fetch_add(1, Ordering::Relaxed);
        let choice = match result {
            Ok(c) => c,
            Err(e) => {
                let why = format!("the forward pass failed: {e}");
                let all: Vec<usize> = slots.iter().map(|s| s.index).collect();
                for &i in &all {
                    self.running[i].sink.send(Event::Failed(why.clone()));
                }
                self.retire(all);
                return;
            }
        };
        let vocab = model.config().vocab_size;
        let (mut done, mut finals) = (Vec::new(), Vec::new());
        for (row, slot) in slots.iter().enumerate() {
            if !sampling[row] {
                continue;
            }
            let seq = &mut self.running[slot.index];
            let token = match &choice {
                Choice::Argmax(ids) => TokenOut {
                    id: ids[row],
                    logprobs: None,
                },
                Choice::Logits(l) => seq.sample(&l[row * vocab..(row + 1) * vocab]),
            };
            match seq.accept(token) {
                Ok(Outcome::Continue) => {}
                Ok(Outcome::Finished(event)) => {
                    done.push(slot.index);
                    finals.push((slot.index, event));
                }
                Ok(Outcome::Cancelled) => done.push(slot.index),
                Err(why) => {
                    seq.sink.send(Event::Failed(why));
                    done.push(slot.index);
                }
            }
        }
        let mut retired = self.retire(done);
        self.publish();
        for (index, event) in finals {
            if let Some((_, s)) = retired.iter_mut().find(|(i, _)| *i == index) {
                s.sink.send(event);
            }
        }
    }

    /// This step's tokens: every decoding sequence's last token, and prompt chunks of the
    /// prefilling ones, oldest first, up to the prefill budget.
    fn plan(&self) -> Vec<Slot> {
        let mut budget = self.shared.config.prefill_chunk;
        let mut slots = Vec::with_capacity(self.running.len());
        for (index, s) in self.running.iter().enumerate() {
            let from = self.cache.len(s.seq);
            let left = s.tokens.len() - from;
            let take = if from >= s.prompt_len {
                left
            } else {
                let n = left.min(budget);
                budget -= n;
                n
            };
            if take > 0 {
                slots.push(Slot {
                    index,
                    from,
                    to: from + take,
                });
            }
        }
        slots
    }

    /// Removes these running sequences (indices, any order) and frees their KV blocks;
    /// returns them with their former indices.
    fn retire(&mut self, mut indices: Vec<usize>) -> Vec<(usize, Sequence)> {
        indices.sort_unstable();
        indices.dedup();
        let mut removed = Vec::with_capacity(indices.len());
        for i in indices.into_iter().rev() {
            // `remove`, not `swap_remove`: the order is the prefill priority (oldest first).
            let s = self.running.remove(i);
            self.cache.remove_sequence(s.seq);
            self.reserved -= s.reserved;
            removed.push((i, s));
        }
        removed
    }

    fn fail_all(&mut self, why: &str) {
        for s in &mut self.running {
            s.sink.send(Event::Failed(why.into()));
        }
        let all = (0..self.running.len()).collect();
        self.retire(all);
        let waiting: Vec<_> = self.shared.lock().waiting.drain(..).collect();
        for mut req in waiting {
            req.sink.send(Event::Failed(why.into()));
        }
        self.publish();
    }

    /// Makes the load visible to [`super::Scheduler::load`].
    fn publish(&self) {
        let used = self.running.iter().map(|s| self.cache.len(s.seq)).sum();
        self.shared.kv_used.store(used, Ordering::Relaxed);
        self.shared
            .kv_reserved
            .store(self.reserved, Ordering::Relaxed);
        let running = self.running.len();
        self.shared.running.store(running, Ordering::Relaxed);
    }
}

/// A forward pass's result: the argmax of each sequence, or its logits.
enum Choice {
    /// Each row's token, chosen on the model's device (the argmax, or a draw).
    Argmax(Vec<u32>),
    Logits(Vec<f32>),
}
