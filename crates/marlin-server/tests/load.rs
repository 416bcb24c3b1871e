//! The load test: 64 concurrent streaming chats, each well-formed and ending with `[DONE]`,
//! greedy texts equal to the same requests one at a time, the server healthy after; then again
//! with a third of the clients going away midway. Few tokens each, so it runs in CI.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};

use marlin_server::client;
use serde_json::{Value, json};
use support::*;

const CLIENTS: usize = 64;
const TOKENS: usize = 8;

fn body(i: usize, max_tokens: usize) -> Value {
    let topics = [
        "the sea", "Paris", "numbers", "trees", "music", "the moon", "bread", "rain",
    ];
    json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": format!("Tell me one fact about {} ({i}).", topics[i % topics.len()])},
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": i,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// Streams request `i` and checks its form; `Some(text)` unless it left after `leave_after`
/// events.
fn chat(addr: SocketAddr, i: usize, leave_after: Option<usize>) -> Option<String> {
    let tokens = if leave_after.is_some() { 400 } else { TOKENS };
    let mut b = body(i, tokens);
    if leave_after.is_some() {
        // Long enough that only cancellation ends it soon.
        b["ignore_eos"] = json!(true);
    }
    let req = b.to_string();
    let mut s = client::open(
        addr,
        "POST",
        "/v1/chat/completions",
        &[],
        Some(req.as_bytes()),
    )
    .unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(
        s.headers
            .iter()
            .find(|h| h.0 == "content-type")
            .map(|h| h.1.as_str()),
        Some("text/event-stream")
    );
    let mut events = Vec::new();
    while let Some(e) = s.next_event().unwrap() {
        if e != "[DONE]" {
            let v: Value = serde_json::from_str(&e).unwrap_or_else(|_| panic!("not JSON: {e}"));
            assert_eq!(v["object"], "chat.completion.chunk", "{v}");
        }
        events.push(e);
        if leave_after == Some(events.len()) {
            return None;
        }
    }
    let (text, finish) = stream_text(&events);
    assert!(finish.is_some(), "no finish_reason: {events:?}");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() <= TOKENS as u64);
    Some(text)
}

/// Runs every client at once (a barrier lines them up).
fn all_at_once(
    addr: SocketAddr,
    leave: impl Fn(usize) -> Option<usize> + Send + Sync + 'static,
) -> Vec<Option<String>> {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let leave = Arc::new(leave);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (barrier, leave) = (barrier.clone(), leave.clone());
            std::thread::spawn(move || {
                barrier.wait();
                chat(addr, i, leave(i))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[test]
fn sixty_four_concurrent_streams_match_one_at_a_time() {
    let server = start(config());
    let addr = server.addr();
    let alone: Vec<String> = (0..CLIENTS).map(|i| chat(addr, i, None).unwrap()).collect();
    assert!(
        alone.iter().any(|t| t != &alone[0]),
        "the prompts should differ: {alone:?}"
    );

    // Bad requests in the middle of the load are refused and disturb nobody.
    let bad = std::thread::spawn(move || {
        for _ in 0..20 {
            assert_error(&post_raw(addr, "/v1/chat/completions", &[], b"{oops"), 400);
            let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
            assert_error(&post(addr, "/v1/chat/completions", &unknown), 404);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let together = all_at_once(addr, |_| None);
    bad.join().unwrap();
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(Some(a), t.as_ref(), "request {i}");
    }
    let m = wait_idle(addr);
    assert_eq!(get(addr, "/health").status, 200);
    let finished = counter(&m, "marlin_requests_total{outcome=\"stop\"}")
        + counter(&m, "marlin_requests_total{outcome=\"length\"}");
    assert_eq!(finished, 2 * CLIENTS as u64);
    // The batch really was shared: far fewer passes than one per token per request.
    let passes = counter(&m, "marlin_forward_passes_total");
    let tokens = counter(&m, "marlin_generation_tokens_total");
    assert!(passes < tokens, "{passes} passes for {tokens} tokens");

    // A third leave after their first token; the others are undisturbed.
    let results = all_at_once(addr, |i| (i % 3 == 0).then_some(2));
    for (i, (a, r)) in alone.iter().zip(&results).enumerate() {
        if i % 3 != 0 {
            assert_eq!(Some(a), r.as_ref(), "request {i}");
        }
    }
    let m = wait_idle(addr);
    let left = (0..CLIENTS).filter(|i| i % 3 == 0).count() as u64;
    assert_eq!(
        counter(&m, "marlin_requests_total{outcome=\"cancelled\"}"),
        left
    );
    assert_eq!(get(addr, "/health").status, 200);
    assert!(chat(addr, 1, None).is_some());
    server.stop().unwrap();
}
