//! Text to token ids and back.
//!
//! Two sources, one type: a Hugging Face `tokenizer.json` (loaded by the `tokenizers` crate as
//! is), or the vocabulary a GGUF file stores ([`FileVocab`]), from which we build the same
//! `tokenizers` pipeline that the model's original `tokenizer.json` declares. Building rather
//! than reimplementing keeps one BPE implementation for both paths, so a GGUF model and its
//! Hugging Face folder tokenize identically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use marlin_models::FileVocab;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::detokenize::Detokenizer;

/// Why a tokenizer could not be built, or could not encode or decode.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "cannot read {path}: {source}; check that the path exists and points at a \
         Hugging Face tokenizer file"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a tokenizer this build can load: {message}; check that it is the \
         tokenizer.json of a Hugging Face model folder"
    )]
    Parse { path: PathBuf, message: String },
    #[error(
        "the model file's tokenizer is `{model}`, which cannot be built from a model file yet; \
         supported: {supported}. Load the model's Hugging Face folder (its tokenizer.json) instead"
    )]
    UnsupportedModel {
        model: String,
        supported: &'static str,
    },
    #[error(
        "the model file names the pre-tokenizer `{pre}`, which is not supported; supported: \
         {supported}. Load the model's Hugging Face folder (its tokenizer.json) instead"
    )]
    UnsupportedPreTokenizer {
        pre: String,
        supported: &'static str,
    },
    #[error("the model file's vocabulary is malformed: {0}; the file may be damaged or cut short")]
    InvalidVocab(String),
    #[error("cannot encode the text: {0}")]
    Encode(String),
    #[error("cannot decode the token ids: {0}")]
    Decode(String),
    #[error(
        "token id {id} is outside the tokenizer's vocabulary of {vocab_size} tokens; the model \
         and the tokenizer may not belong together"
    )]
    UnknownTokenId { id: u32, vocab_size: usize },
}

pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

/// The `tokenizer.ggml.model` values [`Tokenizer::from_vocab`] can build.
const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE)";

/// The `tokenizer.ggml.pre` values [`Tokenizer::from_vocab`] can build.
const SUPPORTED_PRE: &str = "gpt2, default, smollm, starcoder, llama-bpe, llama3, llama-v3, \
                             qwen2, deepseek-r1-qwen";

/// Llama 3's split, as its tokenizer.json writes it (llama.cpp spells the case-insensitive
/// group out by hand only because its regex engine lacks `(?i:)`; fancy-regex has it).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: Llama 3's, but every digit alone.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp's `llama_token_type`) that matter here.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Text to token ids and back. Cheap to clone: the vocabulary is shared.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .finish()
    }
}

/// How the text is cut into words before BPE, per `tokenizer.ggml.pre`.
struct PreTokenizerSpec {
    pre_tokenizer: PreTokenizerWrapper,
    /// Tokenizers converted from tiktoken (Llama 3) take a word that is itself a token whole,
    /// even where the merges would spell it differently.
    ignore_merges: bool,
    /// Qwen2's tokenizer.json NFC-normalizes before splitting.
    nfc: bool,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// tokenizer.json does not say which tokens are BOS and EOS; when a `tokenizer_config.json`
    /// sits beside it, its `bos_token` and `eos_token` are used, else both are `None` (set them
    /// with [`Tokenizer::with_bos_token_id`] / [`Tokenizer::with_eos_token_id`]). Its
    /// `add_bos_token` / `add_eos_token`, when either is written, decide which of them
    /// `encode(text, true)` adds, as transformers does.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read {
            path: path.to_owned(),
            source,
        })?;
        let inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TokenizerError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let mut tokenizer = Self {
            inner: Arc::new(inner),
            bos_token_id: None,
            eos_token_id: None,
        };
        let config = path.with_file_name("tokenizer_config.json");
        if config.is_file() {
            tokenizer.read_special_tokens(&config)?;
        }
        Ok(tokenizer)
    }

    /// Builds the tokenizer a model file stores. Only byte-level BPE (`gpt2`) vocabularies are
    /// supported; others get [`TokenizerError::UnsupportedModel`].
    pub fn from_vocab(vocab: &FileVocab) -> Result<Self> {
        if vocab.model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                model: vocab.model.clone(),
                supported: SUPPORTED_MODELS,
            });
        }
        validate_vocab(vocab)?;
        let spec = pre_tokenizer_spec(&vocab.pre)?;

        let mut token_ids = tokenizers::models::bpe::Vocab::with_capacity(vocab.tokens.len());
        for (id, token) in vocab.tokens.iter().enumerate() {
            // A repeated string keeps its first id, as llama.cpp's token-to-id map does.
            token_ids.entry(token.clone()).or_insert(id as u32);
        }
        let merges = parse_merges(&vocab.merges)?;
        let bpe = BPE::builder()
            .vocab_and_merges(token_ids, merges)
            .ignore_merges(spec.ignore_merges)
            .build()
            .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        if spec.nfc {
            inner
                .with_normalizer(Some(NFC))
                .map_err(|e| TokenizerError::InvalidVocab(e.to_string()))?;
        }
        inner.with_pre_tokenizer(Some(spec.pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let invalid = |e: tokenizers::Error| TokenizerError::InvalidVocab(e.to_string());
        inner
            .add_special_tokens(added_tokens(vocab, TOKEN_TYPE_CONTROL, true))
            .map_err(invalid)?;
        inner
            .add_tokens(added_tokens(vocab, TOKEN_TYPE_USER_DEFINED, false))
            .map_err(invalid)?;
        // `add_space_prefix` is not applied: llama.cpp reads it only for SentencePiece
        // vocabularies, and byte-level files store it as false anyway.
        if vocab.add_bos_token {
            inner.with_post_processor(Some(bos_template(vocab)?));
        }
        Ok(Self {
            inner: Arc::new(inner),
            bos_token_id: vocab.bos_token_id,
            eos_token_id: vocab.eos_token_id,
        })
    }

    /// Overrides the BOS id (e.g. from `generation_config.json`).
    pub fn with_bos_token_id(mut self, id: Option<u32>) -> Self {
        self.bos_token_id = id;
        self
    }

    /// Overrides the EOS id (e.g. from `generation_config.json`).
    pub fn with_eos_token_id(mut self, id: Option<u32>) -> Self {
        self.eos_token_id = id;
        self
    }

    /// Token ids of `text`. With `add_special_tokens`, the tokens the model expects around a
    /// sequence (BOS for Llama 3) are added; special tokens written in the text, such as
    /// `<|im_start|>`, are always matched whole, as Hugging Face does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        // encode_fast skips the character offsets, which nothing here reads.
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens (`<|im_end|>`) are left
    /// out. Bytes that do not form a whole UTF-8 character come out as U+FFFD; streaming
    /// output should go through [`Tokenizer::detokenizer`] instead.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let vocab_size = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(TokenizerError::UnknownTokenId { id, vocab_size });
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The tokenizer as a Hugging Face `tokenizer.json`: how a tokenizer built from a model
    /// file is written beside a converted checkpoint. BOS/EOS ids are not part of it (they
    /// belong in `tokenizer_config.json`).
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| TokenizerError::Encode(format!("cannot serialize the tokenizer: {e}")))
    }

    /// A streaming decoder for generated tokens; see [`Detokenizer`].
    pub fn detokenizer(&self, skip_special_tokens: bool) -> Detokenizer {
        Detokenizer::new(self.clone(), skip_special_tokens)
    }

    /// The id of a token string as the vocabulary spells it (`"<|im_end|>"`, `"Ġthe"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of `id` as the vocabulary spells it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// The BOS token's text, for chat templates.
    pub fn bos_token(&self) -> Option<String> {
        self.bos_token_id.and_then(|id| self.id_to_token(id))
    }

    /// The EOS token's text, for chat templates.
    pub fn eos_token(&self) -> Option<String> {
        self.eos_token_id.and_then(|id| self.id_to_token(id))
    }

    /// Reads `bos_token` / `eos_token` from a `tokenizer_config.json`: each is a string or an
    /// object with a `content` string (newer transformers write the latter).
    fn read_special_tokens(&mut self, config: &Path) -> Result<()> {
        let parse_error = |message: String| TokenizerError::Parse {
            path: config.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(config).map_err(|source| TokenizerError::Read {
            path: config.to_owned(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| parse_error(e.to_string()))?;
        let lookup = |key: &str| -> Result<Option<u32>> {
            let token = match json.get(key) {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(serde_json::Value::String(s)) => s.as_str(),
                Some(v) => match v.get("content").and_then(|c| c.as_str()) {
                    Some(s) => s,
                    None => {
                        return Err(parse_error(format!(
                            "`{key}` is neither a string nor {{\"content\": ...}}"
                        )));
                    }
                },
            };
            match self.inner.token_to_id(token) {
                Some(id) => Ok(Some(id)),
                None => Err(parse_error(format!(
                    "`{key}` is {token:?}, which is not in tokenizer.json's vocabulary"
                ))),
            }
        };
        self.bos_token_id = lookup("bos_token")?;
        self.eos_token_id = lookup("eos_token")?;
        // transformers 5 rebuilds the post-processor when the config says either flag (or
        // tokenizer.json has none); otherwise tokenizer.json's own stands.
        let flag = |key: &str| json.get(key).map(|v| v.as_bool().unwrap_or(false));
        let (add_bos, add_eos) = (flag("add_bos_token"), flag("add_eos_token"));
        if add_bos.is_none() && add_eos.is_none() {
            return Ok(());
        }
        let with_text = |id: Option<u32>, add: Option<bool>| {
            let id = id.filter(|_| add == Some(true))?;
            Some((id, self.inner.id_to_token(id)?))
        };
        let template = special_template(
            with_text(self.bos_token_id, add_bos),
            with_text(self.eos_token_id, add_eos),
        )
        .map_err(|e| parse_error(format!("add_bos_token / add_eos_token: {e}")))?;
        Arc::make_mut(&mut self.inner).with_post_processor(Some(template));
        Ok(())
    }
}

fn pre_tokenizer_spec(pre: &str) -> Result<PreTokenizerSpec> {
    let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::InvalidVocab(format!("pre-tokenizer regex: {e}")))?;
        Ok(Sequence::new(vec![split.into(), byte_level(false).into()]).into())
    };
    let spec = |pre_tokenizer, ignore_merges, nfc| PreTokenizerSpec {
        pre_tokenizer,
        ignore_merges,
        nfc,
    };
    Ok(match pre {
        // GPT-2's own regex is the one ByteLevel applies when asked to. Files that name no
        // pre-tokenizer get it too, as transformers gives them; llama.cpp splits those with a
        // legacy regex of its own, so ids may differ from llama.cpp's around punctuation.
        "gpt2" | "default" | "" => spec(byte_level(true).into(), false, false),
        // SmolLM2's tokenizer.json: every digit alone, then GPT-2's regex. llama.cpp gives
        // `starcoder` the same split.
        "smollm" | "starcoder" => spec(
            Sequence::new(vec![Digits::new(true).into(), byte_level(true).into()]).into(),
            false,
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => spec(split(LLAMA3_SPLIT)?, true, false),
        "qwen2" | "deepseek-r1-qwen" => spec(split(QWEN2_SPLIT)?, false, true),
        other => {
            return Err(TokenizerError::UnsupportedPreTokenizer {
                pre: other.to_owned(),
                supported: SUPPORTED_PRE,
            });
        }
    })
}

/// Checks what `tokenizers` would not: sizes that disagree, ids out of range.
fn validate_vocab(vocab: &FileVocab) -> Result<()> {
    if vocab.tokens.is_empty() {
        return Err(TokenizerError::InvalidVocab("it has no tokens".into()));
    }
    if u32::try_from(vocab.tokens.len()).is_err() {
        return Err(TokenizerError::InvalidVocab(format!(
            "{} tokens do not fit 32-bit ids",
            vocab.tokens.len()
        )));
    }
    if !vocab.token_types.is_empty() && vocab.token_types.len() != vocab.tokens.len() {
        return Err(TokenizerError::InvalidVocab(format!(
            "{} token types for {} tokens",
            vocab.token_types.len(),
            vocab.tokens.len()
        )));
    }
    let special = [
        ("BOS", vocab.bos_token_id),
        ("EOS", vocab.eos_token_id),
        ("unknown", vocab.unknown_token_id),
        ("padding", vocab.padding_token_id),
    ];
    for (name, id) in special {
        if let Some(id) = id.filter(|&id| id as usize >= vocab.tokens.len()) {
            return Err(TokenizerError::InvalidVocab(format!(
                "the {name} token id {id} is outside the {} tokens",
                vocab.tokens.len()
            )));
        }
    }
    if vocab.add_bos_token && vocab.bos_token_id.is_none() {
        return Err(TokenizerError::InvalidVocab(
            "it asks for a BOS token but names none".into(),
        ));
    }
    Ok(())
}

/// `"left right"` strings into pairs. Byte-level tokens never contain a plain space (it is
/// spelled `Ġ`), so the first space after the first character is the separator; starting the
/// search at 1 follows llama.cpp, which allows a left token that is itself a space.
fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let split = merge
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at);
            match split {
                Some(at) if at + 1 < merge.len() => {
                    Ok((merge[..at].to_owned(), merge[at + 1..].to_owned()))
                }
                _ => Err(TokenizerError::InvalidVocab(format!(
                    "merge {i} ({merge:?}) is not two tokens separated by a space"
                ))),
            }
        })
        .collect()
}

/// Tokens of one GGUF type as added tokens: matched whole in the text before BPE sees it.
/// Control tokens are special (skipped when decoding with `skip_special_tokens`); user-defined
/// ones (`<think>`, `<tool_call>`) are not, as in the models' own tokenizer.json.
fn added_tokens(vocab: &FileVocab, token_type: i32, special: bool) -> Vec<AddedToken> {
    vocab
        .tokens
        .iter()
        .zip(&vocab.token_types)
        .filter(|&(token, &ty)| ty == token_type && !token.is_empty())
        .map(|(token, _)| AddedToken::from(token.clone(), special).normalized(false))
        .collect()
}

/// The post-processor that puts BOS before every sequence.
fn bos_template(vocab: &FileVocab) -> Result<TemplateProcessing> {
    // validate_vocab checked both: add_bos_token implies an id, and the id is in range.
    let id = vocab.bos_token_id.unwrap_or_default();
    let token = vocab.tokens[id as usize].clone();
    special_template(Some((id, token)), None)
        .map_err(|e| TokenizerError::InvalidVocab(format!("BOS template: {e}")))
}

/// transformers' post-processor for `add_bos_token` / `add_eos_token`: `BOS $A EOS` for one
/// sequence, `BOS $A EOS BOS $B EOS` for a pair, each token present only when given.
fn special_template(
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
) -> std::result::Result<TemplateProcessing, String> {
    // The template names the tokens by aliases: a token text with ':' or spaces would not
    // parse as a template piece.
    let mut special = Vec::new();
    for (alias, token) in [("BOS", &bos), ("EOS", &eos)] {
        if let Some((id, text)) = token {
            let token = SpecialToken::new(alias.into(), vec![*id], vec![text.clone()]);
            special.push(token.map_err(|e| e.to_string())?);
        }
    }
    let sequence = |seq: &str, type_id: u32| {
        let bos = bos.as_ref().map(|_| format!("BOS:{type_id} "));
        let eos = eos.as_ref().map(|_| format!(" EOS:{type_id}"));
        format!(
            "{}{seq}:{type_id}{}",
            bos.unwrap_or_default(),
            eos.unwrap_or_default()
        )
    };
    let single = sequence("$A", 0);
    let pair = format!("{single} {}", sequence("$B", 1));
    TemplateProcessing::builder()
        .try_single(single)?
        .try_pair(pair)?
        .special_tokens(special)
        .build()
        .map_err(|e| e.to_string())
}
