//! The tokenizer a GGUF file embeds (`tokenizer.ggml.*`, `tokenizer.chat_template`) as a
//! [`FileVocab`].

use super::file::GgufFile;
use super::translate::token_id;
use crate::{FileVocab, ModelError};

/// GGUF's token type "normal", for files that store no types.
const NORMAL: i32 = 1;

/// Reads the embedded tokenizer; every id it names is checked to be a token of the vocabulary.
pub fn read_vocab(file: &GgufFile) -> Result<FileVocab, ModelError> {
    let malformed = |what: String| file.malformed(what);
    let model = file
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| ModelError::Config {
            path: file.path().to_owned(),
            what: "the file has no tokenizer (metadata key 'tokenizer.ggml.model' is missing); \
                   use the model's Hugging Face tokenizer.json"
                .into(),
        })?
        .to_owned();
    let strings = |key: &str| -> Result<Option<Vec<String>>, ModelError> {
        match file.get_array(key)? {
            None => Ok(None),
            Some(a) => a.as_strings().map(|s| Some(s.to_vec())).ok_or_else(|| {
                malformed(format!(
                    "'{key}' is an array of {}, expected strings",
                    a.item_type()
                ))
            }),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| malformed("'tokenizer.ggml.tokens' is missing".into()))?;
    let token_types = token_types(file, tokens.len())?;
    let id = |key: &str| -> Result<Option<u32>, ModelError> {
        let id = token_id(file, key)?;
        match id {
            Some(i) if i as usize >= tokens.len() => Err(malformed(format!(
                "'{key}' is {i}, but the vocabulary has {} tokens",
                tokens.len()
            ))),
            _ => Ok(id),
        }
    };
    // SentencePiece vocabularies (`llama`) add BOS and a leading space unless the file says
    // otherwise (llama.cpp's default). For byte-level BPE (`gpt2`) llama.cpp's default depends
    // on the pre-tokenizer; converted files state `add_bos_token` when BOS is wanted, so
    // without it we add neither.
    let sentencepiece = model == "llama";
    Ok(FileVocab {
        pre: file
            .get_str("tokenizer.ggml.pre")?
            .unwrap_or_default()
            .to_owned(),
        merges: strings("tokenizer.ggml.merges")?.unwrap_or_default(),
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_id: id("tokenizer.ggml.eos_token_id")?,
        unknown_token_id: id("tokenizer.ggml.unknown_token_id")?,
        padding_token_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos_token: file
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(sentencepiece),
        add_space_prefix: file
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(sentencepiece),
        chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_owned),
        model,
        tokens,
        token_types,
    })
}

/// `tokenizer.ggml.token_type`, one per token; all normal when the file has none.
fn token_types(file: &GgufFile, n_tokens: usize) -> Result<Vec<i32>, ModelError> {
    let Some(a) = file.get_array("tokenizer.ggml.token_type")? else {
        return Ok(vec![NORMAL; n_tokens]);
    };
    let types = a
        .to_i64s()
        .and_then(|v| {
            v.into_iter()
                .map(|t| i32::try_from(t).ok())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            file.malformed(format!(
                "'tokenizer.ggml.token_type' is an array of {}, expected i32",
                a.item_type()
            ))
        })?;
    if types.len() != n_tokens {
        return Err(file.malformed(format!("{} token types for {n_tokens} tokens", types.len())));
    }
    Ok(types)
}
