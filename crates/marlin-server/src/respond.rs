//! From the scheduler's events to an answer: one JSON body, or a stream of server-sent events
//! ending with `data: [DONE]`. Chat and completions differ only in their JSON shapes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use marlin_engine::generate::FinishReason;
use marlin_engine::scheduler::{Event, TokenOut};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::error::ApiError;
use crate::metrics::{Metrics, Outcome};
use crate::state::AppState;

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// A request in flight: one receiver per choice (prompt), in index order.
pub struct Job {
    pub kind: Kind,
    pub choices: Vec<UnboundedReceiver<Event>>,
    pub prompt_tokens: usize,
    pub include_usage: bool,
    pub logprobs: bool,
    pub started: Instant,
}

/// The text and tokens one choice produced.
#[derive(Default)]
struct Choice {
    text: String,
    tokens: Vec<TokenOut>,
    finish: Option<FinishReason>,
    completion_tokens: usize,
}

/// Records a request's metrics; a request dropped before its end counts as cancelled.
struct Tracker {
    metrics: Arc<Metrics>,
    started: Instant,
    last: Option<Instant>,
    prompt_tokens: usize,
    generated: usize,
    outcome: Option<Outcome>,
}

impl Tracker {
    fn token(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self.metrics.first_token(now - self.started),
            Some(t) => self.metrics.inter_token(now - t),
        }
        self.last = Some(now);
        self.generated += 1;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(Outcome::Cancelled);
        self.metrics.request(outcome);
        self.metrics.tokens(self.prompt_tokens, self.generated);
    }
}

/// Every choice's events, tagged with the choice's index, as they come.
fn merged(choices: Vec<UnboundedReceiver<Event>>) -> BoxStream<'static, (usize, Event)> {
    let streams = choices.into_iter().enumerate().map(|(i, rx)| {
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .map(move |e| (i, e))
            .boxed()
    });
    stream::select_all(streams).boxed()
}

/// The answer to `job`: streamed or whole.
pub async fn respond(state: &AppState, job: Job, stream: bool) -> Response {
    let tracker = Tracker {
        metrics: state.metrics.clone(),
        started: job.started,
        last: None,
        prompt_tokens: job.prompt_tokens,
        generated: 0,
        outcome: None,
    };
    let shape = Shape {
        kind: job.kind,
        id: new_id(job.kind),
        created: unix_now(),
        model: state.config.served_model_name.clone(),
        state: state.clone(),
        logprobs: job.logprobs,
    };
    if stream {
        sse(shape, job, tracker)
    } else {
        // A failure here was counted by the tracker, not as a refusal.
        whole(shape, job, tracker)
            .await
            .unwrap_or_else(|e| e.into_response())
    }
}

async fn whole(shape: Shape, job: Job, mut tracker: Tracker) -> Result<Response, ApiError> {
    let mut choices: Vec<Choice> = (0..job.choices.len()).map(|_| Choice::default()).collect();
    let mut events = merged(job.choices);
    while let Some((i, event)) = events.next().await {
        let c = &mut choices[i];
        match event {
            Event::Tokens { text, tokens } => {
                tokens.iter().for_each(|_| tracker.token());
                c.text.push_str(&text);
                c.tokens.extend(tokens);
            }
            Event::Done {
                finish_reason,
                completion_tokens,
                ..
            } => {
                c.finish = Some(finish_reason);
                c.completion_tokens = completion_tokens;
            }
            Event::Failed(why) => {
                tracker.outcome = Some(Outcome::Failed);
                return Err(ApiError::internal(why));
            }
        }
    }
    if choices.iter().any(|c| c.finish.is_none()) {
        tracker.outcome = Some(Outcome::Failed);
        return Err(ApiError::unavailable(
            "generation ended early: the server is stopping",
        ));
    }
    tracker.outcome = Some(outcome_of(choices.iter().map(|c| c.finish)));
    let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
    let body = json!({
        "id": shape.id,
        "object": shape.object(false),
        "created": shape.created,
        "model": shape.model,
        "choices": choices.iter().enumerate().map(|(i, c)| shape.whole_choice(i, c)).collect::<Vec<_>>(),
        "usage": usage(job.prompt_tokens, completion),
    });
    Ok(crate::json_response(StatusCode::OK, &body))
}

/// The request's outcome from its choices' finish reasons: `length` if any ran out of tokens.
fn outcome_of(finishes: impl Iterator<Item = Option<FinishReason>>) -> Outcome {
    let mut outcome = Outcome::Stop;
    for f in finishes {
        if f == Some(FinishReason::Length) {
            outcome = Outcome::Length;
        }
    }
    outcome
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// What the SSE stream still has to do.
struct SseState {
    shape: Shape,
    events: BoxStream<'static, (usize, Event)>,
    tracker: Tracker,
    finishes: Vec<Option<FinishReason>>,
    /// Per choice, the text offset of its next token (completions' `text_offset`).
    offsets: Vec<usize>,
    completion_tokens: usize,
    include_usage: bool,
    done: bool,
}

fn sse(shape: Shape, job: Job, tracker: Tracker) -> Response {
    let n = job.choices.len();
    let mut first = String::new();
    if shape.kind == Kind::Chat {
        // OpenAI opens a chat stream with the role.
        let delta = json!({"role": "assistant", "content": ""});
        let choices = (0..n).map(|i| shape.chunk_choice(i, delta.clone(), None, None));
        first = data(&shape.chunk(choices.collect(), job.include_usage));
    }
    let state = SseState {
        shape,
        events: merged(job.choices),
        tracker,
        finishes: vec![None; n],
        offsets: vec![0; n],
        completion_tokens: 0,
        include_usage: job.include_usage,
        done: false,
    };
    let rest = stream::unfold(state, |mut s| async move {
        let text = next_sse(&mut s).await?;
        Some((Ok::<_, Infallible>(text), s))
    });
    let body = stream::iter([Ok::<_, Infallible>(first)]).chain(rest);
    sse_response(body)
}

fn sse_response(body: impl Stream<Item = Result<String, Infallible>> + Send + 'static) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// The next piece of the stream, `None` after `[DONE]`.
async fn next_sse(s: &mut SseState) -> Option<String> {
    if s.done {
        return None;
    }
    loop {
        let Some((i, event)) = s.events.next().await else {
            s.done = true;
            return Some(s.closing());
        };
        match event {
            Event::Tokens { text, tokens } => {
                tokens.iter().for_each(|_| s.tracker.token());
                if text.is_empty() && (tokens.is_empty() || !s.shape.logprobs) {
                    continue;
                }
                let choice = s.shape.delta_choice(i, &text, &tokens, s.offsets[i]);
                s.offsets[i] += s.shape.tokens_text_len(&tokens);
                return Some(data(&s.shape.chunk(vec![choice], s.include_usage)));
            }
            Event::Done {
                finish_reason,
                completion_tokens,
                ..
            } => {
                s.finishes[i] = Some(finish_reason);
                s.completion_tokens += completion_tokens;
                let delta = s.shape.empty_delta();
                let choice = s.shape.chunk_choice(i, delta, None, Some(finish_reason));
                return Some(data(&s.shape.chunk(vec![choice], s.include_usage)));
            }
            Event::Failed(why) => {
                // Headers are gone: the error travels as an event, as OpenAI's streams do.
                s.tracker.outcome = Some(Outcome::Failed);
                s.done = true;
                let err = ApiError::internal(why).body();
                return Some(format!("{}data: [DONE]\n\n", data(&err)));
            }
        }
    }
}

impl SseState {
    /// The usage chunk (when asked for) and `[DONE]`.
    fn closing(&mut self) -> String {
        let mut out = String::new();
        if self.finishes.iter().all(Option::is_some) {
            self.tracker.outcome = Some(outcome_of(self.finishes.iter().copied()));
        } else {
            self.tracker.outcome = Some(Outcome::Failed);
        }
        if self.include_usage {
            let mut chunk = self.shape.chunk(Vec::new(), false);
            chunk["usage"] = usage(self.tracker.prompt_tokens, self.completion_tokens);
            out = data(&chunk);
        }
        out.push_str("data: [DONE]\n\n");
        out
    }
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// The JSON shapes of one answer.
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    state: AppState,
    logprobs: bool,
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn chunk(&self, choices: Vec<Value>, include_usage: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn empty_delta(&self) -> Value {
        match self.kind {
            Kind::Chat => json!({}),
            Kind::Completion => json!(""),
        }
    }

    /// A streamed choice carrying `delta` (chat: the delta object; completions: the text).
    fn chunk_choice(
        &self,
        i: usize,
        delta: Value,
        lp: Option<Value>,
        f: Option<FinishReason>,
    ) -> Value {
        let key = match self.kind {
            Kind::Chat => "delta",
            Kind::Completion => "text",
        };
        json!({
            "index": i,
            key: delta,
            "logprobs": lp,
            "finish_reason": f.map(FinishReason::as_str),
        })
    }

    fn delta_choice(&self, i: usize, text: &str, tokens: &[TokenOut], offset: usize) -> Value {
        let delta = match self.kind {
            Kind::Chat => json!({"content": text}),
            Kind::Completion => json!(text),
        };
        let lp = self.logprobs.then(|| self.logprobs_json(tokens, offset));
        self.chunk_choice(i, delta, lp, None)
    }

    fn whole_choice(&self, i: usize, c: &Choice) -> Value {
        let lp = self.logprobs.then(|| self.logprobs_json(&c.tokens, 0));
        let finish = c.finish.map(FinishReason::as_str);
        match self.kind {
            Kind::Chat => json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": lp,
                "finish_reason": finish,
            }),
            Kind::Completion => json!({
                "index": i,
                "text": c.text,
                "logprobs": lp,
                "finish_reason": finish,
            }),
        }
    }

    /// Bytes of the tokens' texts as `logprobs_json` counts them (only with logprobs).
    fn tokens_text_len(&self, tokens: &[TokenOut]) -> usize {
        if !self.logprobs {
            return 0;
        }
        let tokenizer = self.state.engine.tokenizer();
        let text = |id| tokenizer.decode(&[id], false).unwrap_or_default();
        tokens.iter().map(|t| text(t.id).len()).sum()
    }

    /// Log-probabilities in the endpoint's shape (chat: `content` items; completions: the
    /// legacy parallel lists). `offset` is the text offset of the first token.
    fn logprobs_json(&self, tokens: &[TokenOut], offset: usize) -> Value {
        let tok = |id: u32| {
            let text = self
                .state
                .engine
                .tokenizer()
                .decode(&[id], false)
                .unwrap_or_default();
            let bytes: Vec<u8> = text.as_bytes().to_vec();
            (text, bytes)
        };
        let with_lp = tokens
            .iter()
            .filter_map(|t| Some((t.id, t.logprobs.as_ref()?)));
        match self.kind {
            Kind::Chat => {
                let content: Vec<Value> = with_lp
                    .map(|(id, lp)| {
                        let (text, bytes) = tok(id);
                        let top: Vec<Value> = lp.top.iter().map(|&(t, l)| {
                            let (text, bytes) = tok(t);
                            json!({"token": text, "logprob": l, "bytes": bytes})
                        }).collect();
                        json!({"token": text, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
                    })
                    .collect();
                json!({"content": content})
            }
            Kind::Completion => {
                let (mut texts, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
                let mut at = offset;
                for (id, lp) in with_lp {
                    let (text, _) = tok(id);
                    offsets.push(at);
                    at += text.len();
                    texts.push(text);
                    lps.push(lp.logprob);
                    let top: serde_json::Map<String, Value> =
                        lp.top.iter().map(|&(t, l)| (tok(t).0, json!(l))).collect();
                    tops.push(top);
                }
                json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
            }
        }
    }
}

fn new_id(kind: Kind) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = match kind {
        Kind::Chat => "chatcmpl",
        Kind::Completion => "cmpl",
    };
    format!("{prefix}-{:x}{n:06x}", unix_now())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
