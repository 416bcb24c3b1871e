//! Incremental detokenization: generated ids in, printable text out, one token at a time.
//!
//! Decoding a token alone is wrong in two ways: a character can span tokens (an emoji is four
//! bytes, often two or more byte-level tokens), and some decoders change a token's text by what
//! precedes it (SentencePiece's leading-space strip). So each step decodes a short window of
//! recent ids twice, without and with the new ones, and prints the difference; while the window
//! ends in U+FFFD (an incomplete character), nothing is printed and the ids wait for the next
//! token. This is text-generation-inference's `decode_token`.

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
    /// The window: ids already printed (for context) followed by ids not yet printed.
    ids: Vec<u32>,
    /// Start of the context in `ids`.
    prefix_offset: usize,
    /// Start of the not-yet-printed ids in `ids`.
    read_offset: usize,
}

impl Detokenizer {
    pub fn new(tokenizer: Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Seeds the window with the end of the prompt, so that the first generated token decodes
    /// as it would mid-text (a SentencePiece `▁word` keeps its space). The prompt is not
    /// printed.
    pub fn with_prompt(mut self, prompt_ids: &[u32]) -> Self {
        let start = prompt_ids.len().saturating_sub(PROMPT_CONTEXT);
        self.ids = prompt_ids[start..].to_vec();
        self.prefix_offset = 0;
        self.read_offset = self.ids.len();
        self
    }

    /// Adds one generated id and returns the text it completes: often the token's text, empty
    /// while a character is still incomplete, or several tokens' text at once when one
    /// completes.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        if text.len() <= prefix.len() || text.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let new_text = match text.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_owned(),
            // A decoder rewrote text already printed (none of ours does); print what follows
            // the common part rather than repeat or drop text.
            None => text[common_prefix_len(&prefix, &text)..].to_owned(),
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        // Ids before the context will never be decoded again.
        if self.prefix_offset > 0 {
            self.ids.drain(..self.prefix_offset);
            self.read_offset -= self.prefix_offset;
            self.prefix_offset = 0;
        }
        Ok(new_text)
    }

    /// Ends the stream: returns what is still held back, with U+FFFD for bytes that never
    /// formed a character (generation stopped mid-character), and resets the window.
    pub fn finish(&mut self) -> Result<String> {
        let prefix = self.decode(self.prefix_offset, self.read_offset)?;
        let text = self.decode(self.prefix_offset, self.ids.len())?;
        self.ids.clear();
        self.prefix_offset = 0;
        self.read_offset = 0;
        Ok(match text.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.to_owned(),
            None => text[common_prefix_len(&prefix, &text)..].to_owned(),
        })
    }

    /// Whether ids are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        self.read_offset < self.ids.len()
    }

    fn decode(&self, start: usize, end: usize) -> Result<String> {
        if start == end {
            return Ok(String::new());
        }
        self.tokenizer
            .decode(&self.ids[start..end], self.skip_special_tokens)
    }
}

/// Length in bytes of the longest common prefix of `a` and `b` that ends on a character
/// boundary of both.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|&((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((at, _), _)| at)
}
