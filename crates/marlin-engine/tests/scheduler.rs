//! Continuous batching on the default model: a batch of requests gives each the tokens it gets
//! alone, and a client that goes away frees its place.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

use marlin_engine::generate::{FinishReason, GenerateParams};
use marlin_engine::sampler::SamplingParams;
use marlin_engine::scheduler::{Event, Request, Scheduler, SchedulerConfig, SubmitError};
use marlin_engine::{Engine, TextParams};
use marlin_models::Precision;

fn engine() -> Arc<Engine> {
    Arc::new(Engine::load(marlin_testkit::smollm2_gguf()).unwrap())
}

fn params(max_tokens: usize, sampling: SamplingParams) -> TextParams {
    TextParams {
        generate: GenerateParams {
            max_tokens,
            sampling,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Text, token ids and finish reason of a finished request.
fn collect(rx: Receiver<Event>) -> (String, Vec<u32>, FinishReason) {
    let (mut text, mut ids) = (String::new(), Vec::new());
    for event in rx {
        match event {
            Event::Tokens { text: t, tokens } => {
                text.push_str(&t);
                ids.extend(tokens.iter().map(|t| t.id));
            }
            Event::Done { finish_reason, .. } => return (text, ids, finish_reason),
            Event::Failed(why) => panic!("failed: {why}"),
        }
    }
    panic!("the stream ended without Done")
}

const PROMPTS: [&str; 5] = [
    "The capital of France is",
    "Once upon a time",
    "1, 2, 3, 4,",
    "The best way to learn Rust is",
    "Water boils at",
];

#[test]
fn a_batch_gives_each_request_its_tokens_alone() {
    batch_equals_alone(engine());
}

/// The same on the GPU, which draws the sampled tokens itself (a pass's tokens come back, not
/// its logits).
#[test]
fn on_the_gpu_a_batch_gives_each_request_its_tokens_alone() {
    let Some(gpu) = marlin_gpu::test_gpu() else {
        return;
    };
    let path = marlin_testkit::smollm2_gguf();
    batch_equals_alone(Arc::new(
        Engine::load_on(&path, gpu, Precision::default()).unwrap(),
    ));
}

fn batch_equals_alone(engine: Arc<Engine>) {
    let config = SchedulerConfig {
        prefill_chunk: 4,
        ..Default::default()
    };
    let scheduler = Scheduler::start(engine.clone(), config).unwrap();
    let run = |i: usize| {
        let prompt = engine.encode(PROMPTS[i]).unwrap();
        // Odd ones sample with a seed: the same seed gives the same text in any batch. Two,
        // one greedy and one sampled, have penalties (on a GPU applied there, before the
        // argmax or the draw).
        let mut sampling = if i % 2 == 1 {
            SamplingParams {
                temperature: 0.8,
                seed: Some(i as u64),
                ..Default::default()
            }
        } else {
            SamplingParams::default()
        };
        if matches!(i, 2 | 3) {
            sampling.repetition_penalty = 1.2;
            sampling.frequency_penalty = 0.3;
        }
        let (tx, rx) = channel();
        scheduler
            .submit(Request::new(prompt, params(6, sampling), tx))
            .unwrap();
        rx
    };
    let alone: Vec<_> = (0..PROMPTS.len()).map(|i| collect(run(i))).collect();
    let together: Vec<_> = (0..PROMPTS.len()).map(run).collect();
    let together: Vec<_> = together.into_iter().map(collect).collect();
    assert_eq!(alone, together);
    assert!(alone[0].0.starts_with(" Paris"), "{:?}", alone[0].0);
    assert!(scheduler.load().steps > 0);
}

#[test]
fn a_dropped_receiver_frees_its_place_and_a_full_queue_refuses() {
    let engine = engine();
    let config = SchedulerConfig {
        max_batch: 1,
        max_queue: 1,
        ..Default::default()
    };
    let scheduler = Scheduler::start(engine.clone(), config).unwrap();
    let prompt = engine.encode(PROMPTS[0]).unwrap();
    let (tx, rx) = channel();
    let long = params(4_000, SamplingParams::default());
    let mut req = Request::new(prompt.clone(), long, tx);
    req.stop_at_eos = false;
    scheduler.submit(req).unwrap();
    // Wait until it runs, then go away.
    assert!(matches!(rx.recv().unwrap(), Event::Tokens { .. }));
    let (tx2, rx2) = channel();
    scheduler
        .submit(Request::new(
            prompt.clone(),
            params(2, Default::default()),
            tx2,
        ))
        .unwrap();
    let (tx3, _rx3) = channel();
    let refused = scheduler.submit(Request::new(
        prompt.clone(),
        params(2, Default::default()),
        tx3,
    ));
    assert!(
        matches!(refused, Err(SubmitError::QueueFull { .. })),
        "{refused:?}"
    );
    drop(rx);
    let (_, ids, reason) = collect(rx2);
    assert_eq!((ids.len(), reason), (2, FinishReason::Length));
    let load = scheduler.load();
    assert_eq!((load.running, load.kv_cache_reserved_tokens), (0, 0));
    let too_long = params(100_000, SamplingParams::default());
    let (tx4, _rx4) = channel();
    let refused = scheduler.submit(Request::new(prompt, too_long, tx4));
    assert!(
        matches!(refused, Err(SubmitError::TooLong { .. })),
        "{refused:?}"
    );
}
