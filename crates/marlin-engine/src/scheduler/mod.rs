//! Continuous batching: many requests share one model and one paged KV cache.
//!
//! A [`Scheduler`] owns a thread that owns the KV cache. Requests wait in a bounded queue; at
//! every token boundary the thread admits as many as the batch and the cache can take, then
//! runs one [`Model::forward`](marlin_models::Model::forward) over every running sequence
//! (prefill chunks and decode steps together), samples each sequence's next token with its own
//! [`Sampler`](crate::sampler::Sampler), detokenizes it and sends the text to the request's
//! [`EventSink`]. A sequence's KV blocks return to the pool the moment it finishes or its sink
//! closes (the client went away).
//!
//! Admission reserves a request's worst case (prompt plus `max_tokens` positions), so a
//! running sequence never finds the cache full: requests wait instead, and past the queue's
//! bound [`Scheduler::submit`] refuses at once ([`SubmitError::QueueFull`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use marlin_engine::{Engine, TextParams};
//! use marlin_engine::scheduler::{Event, Request, Scheduler, SchedulerConfig};
//!
//! let engine = Arc::new(Engine::load("SmolLM2-135M-Instruct.Q4_1.gguf")?);
//! let scheduler = Scheduler::start(engine.clone(), SchedulerConfig::default())?;
//! let (tx, rx) = std::sync::mpsc::channel();
//! let prompt = engine.encode("The capital of France is")?;
//! scheduler.submit(Request::new(prompt, TextParams::default(), tx)).unwrap();
//! for event in rx {
//!     match event {
//!         Event::Tokens { text, .. } => print!("{text}"),
//!         Event::Done { finish_reason, .. } => println!(" [{}]", finish_reason.as_str()),
//!         Event::Failed(why) => eprintln!("{why}"),
//!     }
//! }
//! # Ok::<(), marlin_engine::EngineError>(())
//! ```

mod run;
mod sequence;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use thiserror::Error;

use crate::engine::{Engine, EngineError, TextParams};
use crate::generate::FinishReason;

/// Limits of a [`Scheduler`].
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Sequences in one forward pass at most.
    pub max_batch: usize,
    /// Requests waiting for a place at most; past it [`Scheduler::submit`] refuses.
    pub max_queue: usize,
    /// Prompt plus new tokens of one sequence at most (0: the model's context).
    pub max_model_len: usize,
    /// Positions the KV cache holds over all sequences.
    pub kv_cache_tokens: usize,
    /// Prompt tokens prefilled per step over all sequences: bounds how long one step makes the
    /// decoding sequences wait, and the activations' memory.
    pub prefill_chunk: usize,
    /// Positions per KV block.
    pub block_size: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch: 64,
            max_queue: 256,
            max_model_len: 0,
            kv_cache_tokens: 65536,
            prefill_chunk: 256,
            block_size: 16,
        }
    }
}

/// One generation request.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: TextParams,
    /// Also stop at the model's end-of-sequence tokens (off: exactly `max_tokens`, for
    /// benchmarks).
    pub stop_at_eos: bool,
    /// `Some(n)`: report each token's log-probability and the `n` most likely alternatives.
    pub logprobs: Option<usize>,
    pub sink: Box<dyn EventSink>,
}

impl Request {
    pub fn new(prompt: Vec<u32>, params: TextParams, sink: impl EventSink + 'static) -> Self {
        Request {
            prompt,
            params,
            stop_at_eos: true,
            logprobs: None,
            sink: Box::new(sink),
        }
    }
}

/// Where a request's [`Event`]s go (a channel to the client).
pub trait EventSink: Send {
    /// Delivers an event; `false` when nobody listens any more, which cancels the request.
    fn send(&mut self, event: Event) -> bool;
    /// Whether nobody listens any more (checked before each step, so that a client that went
    /// away stops costing compute even before its next token).
    fn is_closed(&self) -> bool {
        false
    }
}

impl EventSink for std::sync::mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        std::sync::mpsc::Sender::send(self, event).is_ok()
    }
}

/// What a request receives, in order: any number of `Tokens`, then `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum Event {
    /// New text (empty while a character or a possible stop string is incomplete) and the
    /// tokens that came with it.
    Tokens { text: String, tokens: Vec<TokenOut> },
    Done {
        finish_reason: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The request could not go on; the message says why.
    Failed(String),
}

/// A generated token.
#[derive(Debug, Clone)]
pub struct TokenOut {
    pub id: u32,
    /// With [`Request::logprobs`]: its log-probability and the most likely alternatives.
    pub logprobs: Option<Logprobs>,
}

/// Log-probabilities under the model's distribution (before sampling settings).
#[derive(Debug, Clone)]
pub struct Logprobs {
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("{waiting} requests are already waiting (--max-queue): retry later")]
    QueueFull { waiting: usize },
    #[error(
        "the request needs {tokens} tokens (prompt plus max_tokens) but the limit is {max}: \
         shorten the prompt or lower max_tokens"
    )]
    TooLong { tokens: usize, max: usize },
    #[error("the prompt has no tokens; give at least one")]
    EmptyPrompt,
    #[error("the server is shutting down")]
    Stopped,
}

/// A snapshot of the scheduler's load (for metrics).
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub running: usize,
    pub waiting: usize,
    /// Positions cached now over all running sequences.
    pub kv_cache_used_tokens: usize,
    /// Positions reserved by admitted requests (their worst case).
    pub kv_cache_reserved_tokens: usize,
    pub kv_cache_tokens: usize,
    /// Forward passes run so far.
    pub steps: u64,
}

/// The batching thread and its queue. Dropping it fails what is left and joins the thread.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    config: SchedulerConfig,
    running: AtomicUsize,
    kv_used: AtomicUsize,
    kv_reserved: AtomicUsize,
    steps: AtomicU64,
}

struct Queue {
    waiting: VecDeque<Request>,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic on the batching thread must not take every later request down with it.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Scheduler {
    /// Makes the KV cache (`config.kv_cache_tokens` positions) and starts the batching thread.
    pub fn start(engine: Arc<Engine>, mut config: SchedulerConfig) -> Result<Self, EngineError> {
        let context = engine.model().config().max_position_embeddings.max(1);
        if config.max_model_len == 0 || config.max_model_len > context {
            config.max_model_len = context;
        }
        config.max_model_len = config.max_model_len.min(config.kv_cache_tokens);
        config.max_batch = config.max_batch.max(1);
        config.prefill_chunk = config.prefill_chunk.max(1);
        let mut cache = engine
            .model()
            .new_cache(config.block_size.max(1), config.kv_cache_tokens)?;
        if engine.model().gpu().is_some() {
            warm_up(engine.model(), &mut cache, config.max_batch);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            config,
            running: AtomicUsize::new(0),
            kv_used: AtomicUsize::new(0),
            kv_reserved: AtomicUsize::new(0),
            steps: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("marlin-scheduler".into())
            .spawn(move || run::Batcher::new(engine, thread_shared, cache).run())
            .map_err(|e| EngineError::Invalid {
                path: Default::default(),
                what: format!("starting the scheduler thread: {e}"),
            })?;
        Ok(Scheduler {
            shared,
            thread: Some(thread),
        })
    }

    /// The limits in force (`max_model_len` resolved against the model and the cache).
    pub fn config(&self) -> &SchedulerConfig {
        &self.shared.config
    }

    /// Queues a request; its events go to its sink. Refuses at once when the queue is full or
    /// the request could never fit.
    pub fn submit(&self, request: Request) -> Result<(), SubmitError> {
        if request.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let tokens = request.prompt.len() + request.params.generate.max_tokens;
        let max = self.shared.config.max_model_len;
        if tokens > max {
            return Err(SubmitError::TooLong { tokens, max });
        }
        let mut queue = self.shared.lock();
        if queue.stopping || !self.is_alive() {
            return Err(SubmitError::Stopped);
        }
        if queue.waiting.len() >= self.shared.config.max_queue {
            return Err(SubmitError::QueueFull {
                waiting: queue.waiting.len(),
            });
        }
        queue.waiting.push_back(request);
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Whether the batching thread still runs (it ends only when dropped, or on a bug).
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    pub fn load(&self) -> Load {
        let s = &self.shared;
        Load {
            running: s.running.load(Ordering::Relaxed),
            waiting: s.lock().waiting.len(),
            kv_cache_used_tokens: s.kv_used.load(Ordering::Relaxed),
            kv_cache_reserved_tokens: s.kv_reserved.load(Ordering::Relaxed),
            kv_cache_tokens: s.config.kv_cache_tokens,
            steps: s.steps.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Decode steps of 1, 2, 4, ... `max_batch` sequences of one token each (and one draw), run once
/// before serving, on temporary sequences removed after: a GPU compiles each batch size's
/// kernels the first time it records them, and a client should not wait for that (on the H100
/// the first 4-stream batches of `bench serve` waited up to 1.2 s). Best effort: a size that
/// fails (a cache too small for it) ends the warm-up, and serving starts anyway.
fn warm_up(model: &marlin_models::Model, cache: &mut marlin_models::KvCache, max_batch: usize) {
    use marlin_models::SeqTokens;
    use marlin_models::device::SampleChoice;
    let mut size = 1;
    loop {
        let n = size.min(max_batch);
        let seqs: Vec<_> = (0..n).map(|_| cache.add_sequence()).collect();
        let batch: Vec<SeqTokens> = seqs
            .iter()
            .map(|&seq| SeqTokens { seq, tokens: &[0] })
            .collect();
        let ok = if n == 1 {
            model
                .forward_sample(&batch, cache, &[SampleChoice::plain(1.0)], &[])
                .is_ok()
        } else {
            model.forward_greedy(&batch, cache).is_ok()
        };
        for seq in seqs {
            cache.remove_sequence(seq);
        }
        if !ok || n == max_batch {
            return;
        }
        size *= 2;
    }
}
