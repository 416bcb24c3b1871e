//! What every handler shares: the engine, the scheduler, the settings and the metrics.

use std::sync::Arc;
use std::time::Instant;

use marlin_engine::scheduler::{Event, EventSink, Request, Scheduler, SubmitError};
use marlin_engine::{Engine, TextParams};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::params::Generation;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub scheduler: Arc<Scheduler>,
    pub config: Arc<ServerConfig>,
    pub metrics: Arc<Metrics>,
    pub started: u64,
    pub since: Instant,
}

/// A request's events into a tokio channel; the receiver's drop (the client went away)
/// cancels the request.
struct ChannelSink(UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl AppState {
    /// The context limit in force (`--max-model-len` resolved against the model and cache).
    pub fn max_model_len(&self) -> usize {
        self.scheduler.config().max_model_len
    }

    /// Queues a prompt; its events arrive on the receiver.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        params: TextParams,
        g: &Generation,
    ) -> Result<UnboundedReceiver<Event>, ApiError> {
        let (tx, rx) = unbounded_channel();
        let mut request = Request::new(prompt, params, ChannelSink(tx));
        request.stop_at_eos = !g.ignore_eos;
        request.logprobs = g.logprobs;
        self.scheduler.submit(request).map_err(|e| match e {
            SubmitError::QueueFull { .. } => ApiError::overloaded(e.to_string()),
            SubmitError::Stopped => ApiError::unavailable(e.to_string()),
            SubmitError::TooLong { .. } => ApiError::bad_request(e.to_string())
                .with_param("max_tokens")
                .with_code("context_length_exceeded"),
            SubmitError::EmptyPrompt => ApiError::invalid("prompt", e.to_string()),
        })?;
        Ok(rx)
    }
}
