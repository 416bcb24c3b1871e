//! Every route and every error over loopback, on the default model (few tokens each).

mod support;

use marlin_server::ServerConfig;
use marlin_server::client;
use serde_json::{Value, json};
use support::*;

fn chat_body(content: &str, max_tokens: usize) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[test]
fn chat_plain_streaming_and_logprobs() {
    let server = start(config());
    let addr = server.addr();
    let r = post(
        addr,
        "/v1/chat/completions",
        &chat_body("What is the capital of France?", 5),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let t = post(
        addr,
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    );
    assert_eq!(v["usage"]["prompt_tokens"], t.json()["count"]);

    let mut body = chat_body("What is the capital of France?", 5);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = stream(addr, "/v1/chat/completions", &body);
    let (streamed, finish) = stream_text(&events);
    assert_eq!((streamed, finish.as_deref()), (text, Some("length")));
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);

    let mut body = chat_body("Hi", 3);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let v = post(addr, "/v1/chat/completions", &body).json();
    let content = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(content.len(), 3, "{v}");
    let top = content[0]["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    // Greedy: the chosen token is the most likely one.
    assert_eq!(content[0]["token"], top[0]["token"]);
    assert!(content[0]["logprob"].as_f64().unwrap() <= 0.0);
}

#[test]
fn sampling_settings_stop_and_seed() {
    let server = start(config());
    let addr = server.addr();
    let body = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6,
                      "temperature": 0, "stop": ["."]});
    let v = post(addr, "/v1/completions", &body).json();
    assert_eq!(v["choices"][0]["text"], " Paris", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let seeded = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6,
        "temperature": 1.0, "top_p": 0.9, "top_k": 40, "min_p": 0.01, "seed": 42,
        "presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1});
    let a = post(addr, "/v1/completions", &seeded).json();
    let b = post(addr, "/v1/completions", &seeded).json();
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"], "{a} {b}");
    // max_completion_tokens wins over max_tokens, as OpenAI's.
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                      "max_tokens": 5, "max_completion_tokens": 2, "temperature": 0});
    let v = post(addr, "/v1/chat/completions", &body).json();
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
}

#[test]
fn completions_lists_streams_and_logprobs() {
    let server = start(config());
    let addr = server.addr();
    let body = json!({"model": MODEL, "prompt": ["The capital of France is", "1, 2, 3,"],
                      "max_tokens": 3, "temperature": 0, "logprobs": 1});
    let v = post(addr, "/v1/completions", &body).json();
    assert_eq!(v["object"], "text_completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{v}");
    assert_eq!(choices[1]["index"], 1);
    assert!(
        choices[0]["text"].as_str().unwrap().starts_with(" Paris"),
        "{v}"
    );
    assert_eq!(
        choices[0]["logprobs"]["tokens"].as_array().unwrap().len(),
        3
    );
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let ids = post(
        addr,
        "/tokenize",
        &json!({"prompt": "The capital of France is"}),
    )
    .json();
    let by_ids =
        json!({"model": MODEL, "prompt": ids["tokens"], "max_tokens": 3, "temperature": 0});
    let w = post(addr, "/v1/completions", &by_ids).json();
    assert_eq!(w["choices"][0]["text"], choices[0]["text"]);

    let mut body = body.clone();
    body["stream"] = json!(true);
    let events = stream(addr, "/v1/completions", &body);
    // Streamed logprobs carry each token's offset in its choice's whole text.
    let offsets: Vec<u64> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|v| v["choices"][0]["index"] == 0)
        .flat_map(|v| {
            v["choices"][0]["logprobs"]["text_offset"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets.len(), 3, "{events:?}");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    let (text, finish) = stream_text(&events);
    let whole = format!(
        "{}{}",
        choices[0]["text"].as_str().unwrap(),
        choices[1]["text"].as_str().unwrap()
    );
    assert_eq!(text.len(), whole.len());
    assert_eq!(finish.as_deref(), Some("length"));
}

#[test]
fn models_health_tokenizer_and_metrics() {
    let server = start(config());
    let addr = server.addr();
    let v = get(addr, "/v1/models").json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(get(addr, "/health").status, 200);
    let t = post(
        addr,
        "/tokenize",
        &json!({"prompt": "The capital of France is"}),
    )
    .json();
    assert_eq!(t["tokens"], json!([504, 3575, 282, 4649, 314]));
    assert_eq!(t["count"], 5);
    let d = post(
        addr,
        "/detokenize",
        &json!({"tokens": [504, 3575, 282, 4649, 314]}),
    )
    .json();
    assert_eq!(d["prompt"], "The capital of France is");
    post(addr, "/v1/chat/completions", &chat_body("Hi", 2));
    post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "nope", "messages": []}),
    );
    assert_eq!(get(addr, "/metrics").status, 200);
    let text = wait_idle(addr);
    for line in [
        "marlin_requests_total{outcome=\"length\"} 1",
        "marlin_requests_total{outcome=\"rejected\"} 1",
        "marlin_generation_tokens_total 2",
        "marlin_time_to_first_token_seconds_count 1",
        "marlin_inter_token_latency_seconds_count 1",
        "marlin_num_requests_running 0",
        "marlin_num_requests_waiting 0",
        "marlin_kv_cache_usage_perc 0",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

#[test]
fn bad_requests_get_openai_errors() {
    let mut cfg = config();
    cfg.max_body_bytes = 4096;
    cfg.scheduler.max_model_len = 64;
    let server = start(cfg);
    let addr = server.addr();
    let chat = "/v1/chat/completions";
    assert_error(&post_raw(addr, chat, &[], b"{not json"), 400);
    assert_error(&post_raw(addr, chat, &[], b"[1, 2]"), 400);
    let e = assert_error(&post(addr, chat, &json!({"model": MODEL})), 400);
    assert_eq!(e["param"], "messages");
    let mut wrong = chat_body("Hi", 2);
    wrong["temperature"] = json!("hot");
    assert_eq!(
        assert_error(&post(addr, chat, &wrong), 400)["param"],
        "temperature"
    );
    for (field, value) in [
        ("top_p", json!(2)),
        ("max_tokens", json!(0)),
        ("n", json!(2)),
        ("top_logprobs", json!(50)),
        ("presence_penalty", json!(-3)),
        ("stop", json!(7)),
        ("messages", json!("hi")),
    ] {
        let mut b = chat_body("Hi", 2);
        b[field] = value;
        if field == "top_logprobs" {
            b["logprobs"] = json!(true);
        }
        assert_eq!(
            assert_error(&post(addr, chat, &b), 400)["param"],
            field,
            "{field}"
        );
    }
    let mut b = chat_body("Hi", 2);
    b["messages"] = json!([{"role": "wizard", "content": "hi"}]);
    assert_error(&post(addr, chat, &b), 400);
    let mut unknown = chat_body("Hi", 2);
    unknown["model"] = json!("gpt-4");
    assert_eq!(
        assert_error(&post(addr, chat, &unknown), 404)["code"],
        "model_not_found"
    );
    let long = chat_body(&"word ".repeat(200), 2);
    assert_eq!(
        assert_error(&post(addr, chat, &long), 400)["code"],
        "context_length_exceeded"
    );
    let too_many = chat_body("Hi", 60);
    assert_eq!(
        assert_error(&post(addr, chat, &too_many), 400)["param"],
        "max_tokens"
    );
    let huge = chat_body(&"x".repeat(10_000), 2);
    assert_eq!(
        assert_error(&post(addr, chat, &huge), 413)["code"],
        "request_too_large"
    );
    let r = post(
        addr,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": []}),
    );
    assert_error(&r, 400);
    assert_error(&post(addr, "/detokenize", &json!({"tokens": [1e9]})), 400);
    assert_error(&get(addr, "/v1/nothing"), 404);
    assert_error(&get(addr, chat), 405);
    // The server is still fine.
    assert_eq!(post(addr, chat, &chat_body("Hi", 1)).status, 200);
}

#[test]
fn an_api_key_guards_v1_and_the_tokenizer_but_not_health_and_metrics() {
    let server = start(ServerConfig {
        api_key: Some("sesame".into()),
        ..config()
    });
    let addr = server.addr();
    let body = json!({"prompt": "hi"}).to_string();
    assert_error(
        &client::request(addr, "GET", "/v1/models", &[], None).unwrap(),
        401,
    );
    let wrong = [("Authorization", "Bearer nope")];
    assert_error(
        &client::request(addr, "GET", "/v1/models", &wrong, None).unwrap(),
        401,
    );
    assert_error(&post_raw(addr, "/tokenize", &[], body.as_bytes()), 401);
    let e = assert_error(
        &post(addr, "/v1/chat/completions", &chat_body("Hi", 1)),
        401,
    );
    assert_eq!(e["code"], "invalid_api_key");
    let right = [("Authorization", "Bearer sesame")];
    assert_eq!(
        client::request(addr, "GET", "/v1/models", &right, None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        post_raw(addr, "/tokenize", &right, body.as_bytes()).status,
        200
    );
    assert_eq!(get(addr, "/health").status, 200);
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn overload_is_refused_at_once_and_a_disconnect_frees_the_place() {
    let mut cfg = config();
    cfg.scheduler.max_batch = 1;
    cfg.scheduler.max_queue = 1;
    let server = start(cfg);
    let addr = server.addr();
    let mut long = chat_body("Count to a thousand.", 1000);
    long["stream"] = json!(true);
    long["ignore_eos"] = json!(true);
    let open = |b: &Value| {
        client::open(
            addr,
            "POST",
            "/v1/chat/completions",
            &[],
            Some(b.to_string().as_bytes()),
        )
        .unwrap()
    };
    let mut running = open(&long);
    // The role chunk, then a token: it runs.
    running.next_event().unwrap();
    running.next_event().unwrap();
    let mut queued = open(&long);
    // Give the queued request time to reach the queue.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = assert_error(
        &post(addr, "/v1/chat/completions", &chat_body("Hi", 1)),
        429,
    );
    assert_eq!(e["code"], "server_overloaded");
    drop(running);
    // The queued one takes the freed place and streams.
    queued.next_event().unwrap();
    assert!(queued.next_event().unwrap().is_some());
    drop(queued);
    let m = wait_idle(addr);
    assert!(
        m.contains("marlin_requests_total{outcome=\"cancelled\"} 2"),
        "{m}"
    );
    assert_eq!(
        post(addr, "/v1/chat/completions", &chat_body("Hi", 1)).status,
        200
    );
    server.stop().unwrap();
}

#[test]
fn a_client_that_leaves_a_whole_answer_cancels_it() {
    use std::io::Write;
    let server = start(config());
    let addr = server.addr();
    let body = json!({"model": MODEL, "prompt": "Once", "max_tokens": 4000, "ignore_eos": true})
        .to_string();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body.as_bytes()).unwrap();
    // Let it start, then hang up long before 4000 tokens.
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(conn);
    let m = wait_idle(addr);
    assert!(
        m.contains("marlin_requests_total{outcome=\"cancelled\"} 1"),
        "{m}"
    );
}
