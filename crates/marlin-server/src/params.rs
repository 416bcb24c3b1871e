//! Reading request bodies: JSON into typed parameters, each field checked for its type and
//! range, with an error that names the field (serde's messages name only a line and column).

use marlin_engine::TextParams;
use marlin_engine::generate::GenerateParams;
use marlin_engine::sampler::SamplingParams;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A request body's top-level object.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses a body: malformed JSON and anything but an object are 400s.
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body is not valid JSON: {e}"))
                .with_code("invalid_json")
        })?;
        match value {
            Value::Object(map) => Ok(Fields(map)),
            _ => Err(ApiError::bad_request("the body must be a JSON object")),
        }
    }

    /// A field, with `null` read as absent (as OpenAI does).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn required(&self, name: &str) -> Result<&Value, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    pub fn string(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.get(name)
            .map(|v| v.as_str().ok_or_else(|| wrong_type(name, "a string", v)))
            .transpose()
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| v.as_bool().ok_or_else(|| wrong_type(name, "a boolean", v)))
            .transpose()
    }

    /// A number within `[lo, hi]`.
    pub fn number(&self, name: &str, lo: f64, hi: f64) -> Result<Option<f32>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = v.as_f64().ok_or_else(|| wrong_type(name, "a number", v))?;
        if !(lo..=hi).contains(&x) {
            let msg = format!("'{name}' is {x}; it must be from {lo} to {hi}");
            return Err(ApiError::invalid(name, msg));
        }
        Ok(Some(x as f32))
    }

    /// An integer within `[lo, hi]`.
    pub fn integer(&self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let x = v
            .as_i64()
            .ok_or_else(|| wrong_type(name, "an integer", v))?;
        if !(lo..=hi).contains(&x) {
            let msg = format!("'{name}' is {x}; it must be from {lo} to {hi}");
            return Err(ApiError::invalid(name, msg));
        }
        Ok(Some(x))
    }

    /// The `model` field, if any, must name the served model.
    pub fn check_model(&self, served: &str) -> Result<(), ApiError> {
        match self.string("model")? {
            Some(m) if m != served => Err(ApiError::model_not_found(m, served)),
            _ => Ok(()),
        }
    }
}

pub fn wrong_type(name: &str, expected: &str, got: &Value) -> ApiError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ApiError::invalid(name, format!("'{name}' must be {expected}, not {got}"))
        .with_code("invalid_type")
}

/// What both generation endpoints take besides the prompt.
#[derive(Debug, Clone)]
pub struct Generation {
    /// `None`: up to the context's end.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// `Some(n)`: log-probabilities with the `n` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Generate exactly `max_tokens` (for benchmarks), as vLLM's `ignore_eos`.
    pub ignore_eos: bool,
}

impl Generation {
    /// Reads the shared fields. `logprobs` differs by endpoint, so the caller passes it.
    pub fn parse(f: &Fields, logprobs: Option<usize>) -> Result<Generation, ApiError> {
        let n = f.integer("n", i64::MIN, i64::MAX)?;
        if n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "n",
                "only n=1 is supported: send one request per completion you want",
            ));
        }
        let max = |name| f.integer(name, 1, i64::from(u32::MAX));
        let max_tokens = match max("max_completion_tokens")? {
            Some(m) => Some(m),
            None => max("max_tokens")?,
        };
        let top_k = f.integer("top_k", -1, i64::from(u32::MAX))?.unwrap_or(0);
        let sampling = SamplingParams {
            temperature: f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0),
            // -1 is vLLM's "all tokens"; 0 is ours.
            top_k: top_k.max(0) as usize,
            top_p: f.number("top_p", 1e-9, 1.0)?.unwrap_or(1.0),
            min_p: f.number("min_p", 0.0, 1.0)?.unwrap_or(0.0),
            repetition_penalty: f.number("repetition_penalty", 1e-3, 10.0)?.unwrap_or(1.0),
            presence_penalty: f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
            frequency_penalty: f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
            // OpenAI's seed is a signed 64-bit integer; its bits seed ours.
            seed: f.integer("seed", i64::MIN, i64::MAX)?.map(|s| s as u64),
        };
        let include_usage = match f.get("stream_options") {
            None => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(v) => return Err(wrong_type("stream_options.include_usage", "a boolean", v)),
            },
            Some(v) => return Err(wrong_type("stream_options", "an object", v)),
        };
        Ok(Generation {
            max_tokens: max_tokens.map(|m| m as usize),
            sampling,
            stop: stop_strings(f)?,
            stream: f.bool("stream")?.unwrap_or(false),
            include_usage,
            logprobs,
            ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
        })
    }

    /// The engine's parameters for a prompt of `prompt_len` tokens under `max_model_len`.
    /// `prompt_param` names the prompt's field in errors (`messages` or `prompt`).
    pub fn text_params(
        &self,
        prompt_len: usize,
        max_model_len: usize,
        prompt_param: &str,
    ) -> Result<TextParams, ApiError> {
        if prompt_len >= max_model_len {
            return Err(ApiError::bad_request(format!(
                "the prompt is {prompt_len} tokens; this server's context is {max_model_len} \
                 (--max-model-len), which must also leave room for one new token: shorten it"
            ))
            .with_param(prompt_param)
            .with_code("context_length_exceeded"));
        }
        let room = max_model_len - prompt_len;
        let max_tokens = match self.max_tokens {
            Some(m) if m > room => {
                return Err(ApiError::bad_request(format!(
                    "the prompt is {prompt_len} tokens and max_tokens {m}: together more than \
                     this server's context of {max_model_len} (--max-model-len); lower \
                     max_tokens to at most {room} or shorten the prompt"
                ))
                .with_param("max_tokens")
                .with_code("context_length_exceeded"));
            }
            Some(m) => m,
            None => room,
        };
        Ok(TextParams {
            generate: GenerateParams {
                max_tokens,
                sampling: self.sampling.clone(),
                ..Default::default()
            },
            stop_strings: self.stop.clone(),
        })
    }
}

/// `stop`: a string or a list of up to 4 strings.
fn stop_strings(f: &Fields) -> Result<Vec<String>, ApiError> {
    let stops = match f.get("stop") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| wrong_type("stop", "a string or a list of strings", v))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(wrong_type("stop", "a string or a list of strings", v)),
    };
    if stops.len() > 4 {
        return Err(ApiError::invalid("stop", "at most 4 stop strings"));
    }
    Ok(stops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Generation, ApiError> {
        Generation::parse(&Fields::parse(body.as_bytes())?, None)
    }

    #[test]
    fn fields_are_checked_by_name() {
        let e = parse(r#"{"temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = parse(r#"{"top_p": 1.5}"#).unwrap_err();
        assert!(e.message.contains("from"), "{}", e.message);
        let e = parse(r#"{"n": 2}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        assert!(Fields::parse(b"{oops").is_err());
        let g = parse(r#"{"max_completion_tokens": 3, "stop": "x", "seed": -1}"#).unwrap();
        assert_eq!((g.max_tokens, g.stop.len()), (Some(3), 1));
        assert_eq!(g.sampling.seed, Some(u64::MAX));
    }
}
