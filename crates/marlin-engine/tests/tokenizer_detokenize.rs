//! Streaming detokenization with SmolLM2's vocabulary: text arrives whole characters at a time.

mod tokenizer_support;

use marlin_engine::Tokenizer;
use tokenizer_support::{ids, reference, smollm2_vocab};

fn smollm2() -> Tokenizer {
    Tokenizer::from_vocab(&smollm2_vocab()).unwrap()
}

/// Streams `ids` and returns the chunks, including the final flush.
fn stream(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Vec<String> {
    let mut detok = tok.detokenizer(skip_special);
    let mut chunks: Vec<String> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    chunks.push(detok.finish().unwrap());
    chunks
}

#[test]
fn streamed_text_equals_decoded_text_for_every_fixture_string() {
    let tok = smollm2();
    for case in reference()["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = ids(&case["ids"]);
        for skip_special in [false, true] {
            let chunks = stream(&tok, &ids, skip_special);
            let key = if skip_special {
                "decoded_skip_special"
            } else {
                "decoded"
            };
            assert_eq!(chunks.concat(), case[key].as_str().unwrap(), "{text:?}");
            for chunk in &chunks {
                assert!(
                    !chunk.contains('\u{fffd}'),
                    "{text:?}: broken character in {chunk:?}"
                );
            }
        }
    }
}

#[test]
fn multi_token_characters_wait_until_complete() {
    let tok = smollm2();
    for text in ["🤗", "👨\u{200d}👩\u{200d}👧", "日本語", "𝔘"] {
        let ids = tok.encode(text, false).unwrap();
        let mut detok = tok.detokenizer(false);
        let mut printed = String::new();
        for &id in &ids {
            let chunk = detok.push(id).unwrap();
            // Every chunk is a run of whole characters of the text, in order.
            assert!(
                text[printed.len()..].starts_with(&chunk),
                "{text:?}: {chunk:?}"
            );
            printed += &chunk;
        }
        assert_eq!(printed, text);
        assert!(!detok.has_pending());
    }
    // 🤗 is 4 bytes that SmolLM2 spells with more than one token: the first prints nothing.
    let hug = tok.encode("🤗", false).unwrap();
    assert!(hug.len() > 1, "{hug:?}");
    let mut detok = tok.detokenizer(false);
    assert_eq!(detok.push(hug[0]).unwrap(), "");
    assert!(detok.has_pending());
}

#[test]
fn finish_flushes_an_incomplete_character_as_a_replacement() {
    let tok = smollm2();
    let hug = tok.encode("a🤗", false).unwrap();
    let mut detok = tok.detokenizer(false);
    assert_eq!(detok.push(hug[0]).unwrap(), "a");
    assert_eq!(detok.push(hug[1]).unwrap(), "");
    let rest = detok.finish().unwrap();
    assert!(
        !rest.is_empty() && rest.chars().all(|c| c == '\u{fffd}'),
        "{rest:?}"
    );
    assert!(!detok.has_pending());
    // After finish the detokenizer starts over.
    assert_eq!(detok.push(hug[0]).unwrap(), "a");
}

#[test]
fn special_tokens_are_printed_or_skipped() {
    let tok = smollm2();
    let ids = tok
        .encode("<|im_start|>assistant\nHi!<|im_end|>", false)
        .unwrap();
    assert_eq!(
        stream(&tok, &ids, false).concat(),
        "<|im_start|>assistant\nHi!<|im_end|>"
    );
    assert_eq!(stream(&tok, &ids, true).concat(), "assistant\nHi!");
}

#[test]
fn prompt_context_is_not_printed() {
    let tok = smollm2();
    let prompt = tok
        .encode("<|im_start|>user\nSay 日本<|im_end|>\n", false)
        .unwrap();
    let generated = tok.encode(" 語 and 🤗!", false).unwrap();
    let mut detok = tok.detokenizer(true).with_prompt(&prompt).unwrap();
    let mut out = String::new();
    for &id in &generated {
        out += &detok.push(id).unwrap();
    }
    out += &detok.finish().unwrap();
    assert_eq!(out, " 語 and 🤗!");
}

#[test]
fn an_unknown_id_is_an_error_and_the_stream_goes_on() {
    let tok = smollm2();
    let mut detok = tok.detokenizer(false);
    assert_eq!(detok.push(504).unwrap(), "The");
    assert!(detok.push(u32::MAX).is_err());
    assert_eq!(detok.push(3575).unwrap(), " capital");
}

/// Bytes that never form a character (a model can emit any token) are printed as U+FFFD as
/// soon as a later byte proves them invalid, not held until the end.
#[test]
fn invalid_bytes_do_not_hold_the_stream() {
    let tok = smollm2();
    // `¡` is the byte-level spelling of the byte 0xA1, a UTF-8 continuation byte.
    let continuation = tok.token_to_id("¡").expect("SmolLM2 has the byte 0xA1");
    let mut detok = tok.detokenizer(false);
    let mut printed = String::new();
    for i in 0..10 {
        printed += &detok.push(continuation).unwrap();
        // Each byte is printed one step late: the last may still start a character.
        assert_eq!(printed.chars().count(), i, "{printed:?}");
    }
    printed += &detok.push(504).unwrap();
    assert_eq!(printed, "\u{fffd}".repeat(10) + "The");
}

/// A token that ends one character and starts the next: the finished part prints at once.
#[test]
fn text_before_an_incomplete_character_is_printed_at_once() {
    let tok = smollm2();
    // SmolLM2 spells " 😀" as [" " + the emoji's first 3 bytes, its last byte].
    let ids = tok.encode("emoji 😀", false).unwrap();
    assert_eq!(ids, [391, 33777, 40303, 218]);
    let mut detok = tok.detokenizer(false);
    let chunks: Vec<String> = ids.iter().map(|&id| detok.push(id).unwrap()).collect();
    assert_eq!(chunks, ["em", "oji", " ", "😀"]);
}
