//! The endpoints: parse and check the request, queue it, answer.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use marlin_engine::chat::Message;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::Outcome;
use crate::params::{Fields, Generation, wrong_type};
use crate::respond::{Job, Kind, respond};
use crate::state::AppState;

/// A body that could not be read: too large (413) or broken off.
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.config.max_body_bytes)
        } else {
            ApiError::bad_request(format!("reading the body: {}", r.body_text()))
        }
    })
}

/// An answer, or a refusal counted in the metrics.
fn answer(state: &AppState, r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(|e| {
        state.metrics.request(Outcome::Rejected);
        e.into_response()
    })
}

pub async fn chat(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let r = async {
        let f = Fields::parse(&body(&state, b)?)?;
        f.check_model(&state.config.served_model_name)?;
        let messages = messages(&f)?;
        let logprobs = match f.bool("logprobs")?.unwrap_or(false) {
            true => Some(f.integer("top_logprobs", 0, 20)?.unwrap_or(0) as usize),
            false => None,
        };
        let g = Generation::parse(&f, logprobs)?;
        let prompt = state
            .engine
            .encode_chat(&messages)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        let params = g.text_params(prompt.len(), state.max_model_len(), "messages")?;
        let job = Job {
            kind: Kind::Chat,
            prompt_tokens: prompt.len(),
            choices: vec![state.submit(prompt, params, &g)?],
            include_usage: g.include_usage,
            logprobs: g.logprobs.is_some(),
            started,
        };
        Ok(respond(&state, job, g.stream).await)
    };
    let r = r.await;
    answer(&state, r)
}

pub async fn completions(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let r = async {
        let f = Fields::parse(&body(&state, b)?)?;
        f.check_model(&state.config.served_model_name)?;
        let prompts = prompts(&state, &f)?;
        let logprobs = f.integer("logprobs", 0, 20)?.map(|n| n as usize);
        let g = Generation::parse(&f, logprobs)?;
        let mut choices = Vec::with_capacity(prompts.len());
        let mut prompt_tokens = 0;
        for prompt in prompts {
            let params = g.text_params(prompt.len(), state.max_model_len(), "prompt")?;
            prompt_tokens += prompt.len();
            // A refusal drops the receivers made so far, which cancels their prompts.
            choices.push(state.submit(prompt, params, &g)?);
        }
        let job = Job {
            kind: Kind::Completion,
            prompt_tokens,
            choices,
            include_usage: g.include_usage,
            logprobs: g.logprobs.is_some(),
            started,
        };
        Ok(respond(&state, job, g.stream).await)
    };
    let r = r.await;
    answer(&state, r)
}

/// `messages`: a non-empty list of `{role, content}`; content is text, a list of text parts,
/// or null (an assistant turn).
fn messages(f: &Fields) -> Result<Vec<Message>, ApiError> {
    let list = f.required("messages")?;
    let list = list
        .as_array()
        .ok_or_else(|| wrong_type("messages", "a list of messages", list))?;
    if list.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "'messages' is empty; give at least one",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| message(i, m))
        .collect()
}

fn message(i: usize, m: &Value) -> Result<Message, ApiError> {
    let param = format!("messages[{i}]");
    let bad = |what: &str| ApiError::invalid(&param, format!("{param}: {what}"));
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("needs a 'role' string"))?;
    let role = match role {
        // OpenAI's newer name for the system turn.
        "developer" => "system",
        "system" | "user" | "assistant" | "tool" => role,
        other => {
            return Err(bad(&format!(
                "unknown role '{other}'; use system, user or assistant"
            )));
        }
    };
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == "assistant" => String::new(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                _ => Err(bad("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")),
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat(),
        _ => return Err(bad("needs 'content': a string or a list of text parts")),
    };
    Ok(Message::new(role, content))
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
fn prompts(state: &AppState, f: &Fields) -> Result<Vec<Vec<u32>>, ApiError> {
    let p = f.required("prompt")?;
    let expected = "a string, a list of strings, or token ids";
    let encode = |s: &str| {
        state
            .engine
            .encode(s)
            .map_err(|e| ApiError::invalid("prompt", e.to_string()))
    };
    let ids = |v: &[Value]| -> Result<Vec<u32>, ApiError> {
        v.iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| wrong_type("prompt", expected, t))
            })
            .collect()
    };
    let prompts = match p {
        Value::String(s) => vec![encode(s)?],
        Value::Array(items) if items.iter().all(Value::is_number) && !items.is_empty() => {
            vec![ids(items)?]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => encode(s),
                Value::Array(t) => ids(t),
                other => Err(wrong_type("prompt", expected, other)),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(wrong_type("prompt", expected, other)),
    };
    let vocab = state.engine.model().config().vocab_size;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid(
            "prompt",
            "the prompt is empty; give some text",
        ));
    }
    if prompts.iter().flatten().any(|&t| t as usize >= vocab) {
        return Err(ApiError::invalid(
            "prompt",
            format!("token ids must be below {vocab}"),
        ));
    }
    Ok(prompts)
}

pub async fn models(State(state): State<AppState>) -> Response {
    let model = json!({
        "id": state.config.served_model_name,
        "object": "model",
        "created": state.started,
        "owned_by": "metal-marlin",
        "max_model_len": state.max_model_len(),
    });
    crate::json_response(StatusCode::OK, &json!({"object": "list", "data": [model]}))
}

pub async fn health(State(state): State<AppState>) -> Response {
    if !state.scheduler.is_alive() {
        return ApiError::unavailable("the batching thread stopped: restart the server")
            .into_response();
    }
    let load = state.scheduler.load();
    let uptime_s = state.since.elapsed().as_secs();
    let body = json!({"status": "ok", "running": load.running, "waiting": load.waiting, "uptime_s": uptime_s});
    crate::json_response(StatusCode::OK, &body)
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.scheduler.load());
    let kind = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, kind)], text).into_response()
}

/// `POST /tokenize`: `{"prompt": TEXT}` or `{"messages": [...]}` (chat template applied) to
/// `{"tokens", "count", "max_model_len"}`, as vLLM.
pub async fn tokenize(State(state): State<AppState>, b: Result<Bytes, BytesRejection>) -> Response {
    let r: Result<Response, ApiError> = (|| {
        let f = Fields::parse(&body(&state, b)?)?;
        f.check_model(&state.config.served_model_name)?;
        let tokens = if f.get("messages").is_some() {
            state
                .engine
                .encode_chat(&messages(&f)?)
                .map_err(|e| ApiError::invalid("messages", e.to_string()))?
        } else {
            let text = f
                .string("prompt")?
                .ok_or_else(|| ApiError::missing("prompt"))?;
            let special = f.bool("add_special_tokens")?.unwrap_or(true);
            state
                .engine
                .tokenizer()
                .encode(text, special)
                .map_err(|e| ApiError::invalid("prompt", e.to_string()))?
        };
        let body = json!({"tokens": tokens, "count": tokens.len(), "max_model_len": state.max_model_len()});
        Ok(crate::json_response(StatusCode::OK, &body))
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /detokenize`: `{"tokens": [ids]}` to `{"prompt": TEXT}`, as vLLM.
pub async fn detokenize(
    State(state): State<AppState>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    let r: Result<Response, ApiError> = (|| {
        let f = Fields::parse(&body(&state, b)?)?;
        f.check_model(&state.config.served_model_name)?;
        let list = f.required("tokens")?;
        let expected = "a list of token ids";
        let items = list
            .as_array()
            .ok_or_else(|| wrong_type("tokens", expected, list))?;
        let vocab = state.engine.model().config().vocab_size;
        let ids = items
            .iter()
            .map(|t| match t.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(id as u32),
                Some(id) => Err(ApiError::invalid(
                    "tokens",
                    format!("token id {id} is not below {vocab}"),
                )),
                None => Err(wrong_type("tokens", expected, t)),
            })
            .collect::<Result<Vec<u32>, _>>()?;
        let text = state
            .engine
            .tokenizer()
            .decode(&ids, false)
            .map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
        Ok(crate::json_response(
            StatusCode::OK,
            &json!({"prompt": text}),
        ))
    })();
    r.unwrap_or_else(IntoResponse::into_response)
}

pub async fn not_found(uri: Uri) -> Response {
    ApiError::not_found(uri.path()).into_response()
}

pub async fn method_not_allowed(uri: Uri) -> Response {
    let mut e = ApiError::bad_request(format!("{} does not take this method", uri.path()));
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

/// With `--api-key`: requests without `Authorization: Bearer KEY` get 401.
pub async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Equality whose time does not tell how many leading bytes matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
