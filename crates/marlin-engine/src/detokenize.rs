//! Incremental detokenization: generated ids in, printable text out, one token at a time.
//!
//! Decoding a token alone is wrong in two ways: a character can span tokens (an emoji is four
//! bytes, often two or more byte-level tokens, and a token may end mid-character), and some
//! decoders change a token's text by what precedes it (SentencePiece's leading-space strip).
//! So, as in text-generation-inference's `decode_token`, each step decodes a short window that
//! starts with already-printed tokens as context and prints what the window's text gained.
//! An incomplete character at the end decodes as U+FFFD and is held back until its last byte
//! arrives. Unlike TGI, the text before that character is printed at once: a token may end
//! one character and begin the next, and a run of such tokens (common in CJK) or of invalid
//! bytes would otherwise print nothing for as long as it lasts.

use crate::tokenizer::{Result, Tokenizer};

/// How many prompt tokens seed the window: enough context for any decoder's per-token rules
/// (TGI uses the same number).
const PROMPT_CONTEXT: usize = 5;

/// Turns a stream of token ids into a stream of text that never splits a UTF-8 character.
///
/// ```no_run
/// # fn demo(tokenizer: &marlin_engine::Tokenizer, ids: &[u32]) -> Result<(), marlin_engine::TokenizerError> {
/// let mut detok = tokenizer.detokenizer(true);
/// for &id in ids {
///     print!("{}", detok.push(id)?);
/// }
/// print!("{}", detok.finish()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Detokenizer {
    tokenizer: Tokenizer,
    skip_special_tokens: bool,
    /// The window: fully printed ids (context) followed by ids whose text is not yet all out.
    ids: Vec<u32>,
    /// Start of the not-fully-printed ids in `ids`.
    read_offset: usize,
    /// Bytes of the window's decoded text already printed (or, for the context, never to be).
    printed: usize,
}

impl Detokenizer {
    pub fn new(tokenizer: Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            read_offset: 0,
            printed: 0,
        }
    }

    /// Seeds the window with the end of the prompt, so that the first generated token decodes
    /// as it would mid-text (a SentencePiece `▁word` keeps its space). The prompt itself is
    /// not printed.
    pub fn with_prompt(mut self, prompt_ids: &[u32]) -> Result<Self> {
        let start = prompt_ids.len().saturating_sub(PROMPT_CONTEXT);
        self.ids = prompt_ids[start..].to_vec();
        self.read_offset = self.ids.len();
        self.printed = self.decode_window()?.len();
        Ok(self)
    }

    /// Adds one generated id and returns the text it completes: often the token's text, empty
    /// while a character is still incomplete, or more than one token's text when one
    /// completes.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = match self.decode_window() {
            Ok(text) => text,
            Err(e) => {
                // Leave the window as it was, so that the stream can go on.
                self.ids.pop();
                return Err(e);
            }
        };
        let incomplete = text.ends_with(char::REPLACEMENT_CHARACTER);
        let stable_end = if incomplete {
            text.len() - char::REPLACEMENT_CHARACTER.len_utf8()
        } else {
            text.len()
        };
        // `get` is None only if a decoder rewrote text already printed (none of ours does);
        // printing nothing then is better than repeating or cutting a character.
        let new_text = text
            .get(self.printed..stable_end)
            .unwrap_or_default()
            .to_owned();
        self.printed = self.printed.max(stable_end);
        if !incomplete {
            // Everything is out: the ids printed since the last slide become the context,
            // older ones will never be decoded again.
            self.ids.drain(..self.read_offset);
            self.read_offset = self.ids.len();
            self.printed = self.decode_window()?.len();
        }
        Ok(new_text)
    }

    /// Ends the stream: returns what is still held back, with U+FFFD for bytes that never
    /// formed a character (generation stopped mid-character), and starts over.
    pub fn finish(&mut self) -> Result<String> {
        let text = self.decode_window()?;
        let rest = text.get(self.printed..).unwrap_or_default().to_owned();
        self.ids.clear();
        self.read_offset = 0;
        self.printed = 0;
        Ok(rest)
    }

    /// Whether ids are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        self.read_offset < self.ids.len()
    }

    fn decode_window(&self) -> Result<String> {
        if self.ids.is_empty() {
            return Ok(String::new());
        }
        self.tokenizer.decode(&self.ids, self.skip_special_tokens)
    }
}
