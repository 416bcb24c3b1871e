//! A server on a loopback port over the default model, and JSON helpers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, OnceLock};

use marlin_engine::Engine;
use marlin_server::client::{self, Response};
use marlin_server::{Server, ServerConfig};
use serde_json::Value;

pub const MODEL: &str = "smollm2";

/// The default model, loaded once per test binary.
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(Engine::load(marlin_testkit::smollm2_gguf()).unwrap()))
        .clone()
}

pub fn config() -> ServerConfig {
    ServerConfig {
        served_model_name: MODEL.into(),
        ..Default::default()
    }
}

pub fn start(config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    Server::start(engine(), config, listener, false).unwrap()
}

pub fn post(addr: SocketAddr, path: &str, body: &Value) -> Response {
    post_raw(addr, path, &[], body.to_string().as_bytes())
}

pub fn post_raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    client::request(addr, "POST", path, headers, Some(body)).unwrap()
}

pub fn get(addr: SocketAddr, path: &str) -> Response {
    client::request(addr, "GET", path, &[], None).unwrap()
}

/// The `data:` payloads of a streamed request, `[DONE]` included.
pub fn stream(addr: SocketAddr, path: &str, body: &Value) -> Vec<String> {
    let mut s = client::open(addr, "POST", path, &[], Some(body.to_string().as_bytes())).unwrap();
    assert_eq!(s.status, 200);
    let mut events = Vec::new();
    while let Some(e) = s.next_event().unwrap() {
        events.push(e);
    }
    events
}

/// The text of a streamed chat: its deltas' content, checking that every event but the last
/// is a JSON chunk and the last is `[DONE]`.
pub fn stream_text(events: &[String]) -> (String, Option<String>) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let mut text = String::new();
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}"));
        for c in v["choices"].as_array().unwrap() {
            let piece = c["delta"]["content"].as_str().or(c["text"].as_str());
            text.push_str(piece.unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    (text, finish)
}

/// Asserts OpenAI's error shape and status; returns the error object.
pub fn assert_error(r: &Response, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    e.clone()
}

/// Waits until no request runs and the KV cache is empty (the gauges trail the answers by a
/// step); returns the metrics text.
pub fn wait_idle(addr: SocketAddr) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = get(addr, "/metrics").text();
        let idle = [
            "marlin_num_requests_running 0",
            "marlin_num_requests_waiting 0",
            "marlin_kv_cache_usage_perc 0\n",
        ];
        if idle.iter().all(|l| m.contains(l)) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "never idle:\n{m}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
