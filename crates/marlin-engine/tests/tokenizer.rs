//! The tokenizer built from a GGUF vocabulary against transformers, and its errors.

mod tokenizer_support;

use marlin_engine::{Tokenizer, TokenizerError};
use marlin_models::FileVocab;
use tokenizer_support::{ids, reference, smollm2_vocab};

fn smollm2() -> Tokenizer {
    Tokenizer::from_vocab(&smollm2_vocab()).expect("SmolLM2's vocabulary builds")
}

#[test]
fn smollm2_reference_ids() {
    let tok = smollm2();
    assert_eq!(
        tok.encode("The capital of France is", true).unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    assert_eq!(
        tok.encode(" hello  world\n\n\tfoo", true).unwrap(),
        [33662, 216, 905, 1116, 197, 15236]
    );
}

#[test]
fn smollm2_matches_transformers_on_every_fixture_string() {
    let tok = smollm2();
    let reference = reference();
    let cases = reference["tokenizer_cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), expected, "{text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_with_special_tokens"]),
            "{text:?} with special tokens"
        );
        assert_eq!(
            tok.decode(&expected, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
        assert_eq!(
            tok.decode(&expected, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "decode of {text:?} without special tokens"
        );
    }
}

/// The same vocabulary under other pre-tokenizers: checks our Llama 3 and Qwen2 regexes (and
/// Llama 3's whole-word lookup, Qwen2's NFC) against transformers'.
#[test]
fn llama3_and_qwen2_pre_tokenizers_match_transformers() {
    let reference = reference();
    for pre in ["llama-bpe", "qwen2"] {
        let tok = Tokenizer::from_vocab(&FileVocab {
            pre: pre.into(),
            ..smollm2_vocab()
        })
        .unwrap();
        for case in reference["tokenizer_cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let expected = ids(&case[format!("ids_{pre}").as_str()]);
            assert_eq!(
                tok.encode(text, false).unwrap(),
                expected,
                "{pre}: {text:?}"
            );
        }
    }
}

#[test]
fn special_tokens_and_lookups() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_to_id("The"), Some(504));
    assert_eq!(tok.id_to_token(504).as_deref(), Some("The"));
    assert_eq!(tok.id_to_token(49152), None);
    // Control tokens are matched whole, even glued to text.
    assert_eq!(tok.encode("x<|im_end|>y", false).unwrap()[1], 2);
}

#[test]
fn add_bos_token_prepends_bos_only_with_special_tokens() {
    let tok = Tokenizer::from_vocab(&FileVocab {
        add_bos_token: true,
        ..smollm2_vocab()
    })
    .unwrap();
    let plain = tok.encode("The capital of France is", false).unwrap();
    assert_eq!(plain, [504, 3575, 282, 4649, 314]);
    let with_bos = tok.encode("The capital of France is", true).unwrap();
    assert_eq!(with_bos, [1, 504, 3575, 282, 4649, 314]);
    assert_eq!(
        tok.decode(&with_bos, true).unwrap(),
        "The capital of France is"
    );
}

#[test]
fn user_defined_tokens_are_whole_but_not_special() {
    let mut vocab = smollm2_vocab();
    // Mark `<reponame>` (id 4) user-defined, as `<think>` is in Qwen3's GGUF.
    vocab.token_types[4] = 4;
    let tok = Tokenizer::from_vocab(&vocab).unwrap();
    let ids = tok.encode("a<reponame>b", false).unwrap();
    assert!(ids.contains(&4), "{ids:?}");
    assert_eq!(tok.decode(&ids, true).unwrap(), "a<reponame>b");
}

/// Byte-level BPE loses nothing: any text decodes back to itself. Deterministic pseudo-random
/// strings over ASCII, Latin, CJK, emoji, combining marks and control characters.
#[test]
fn round_trip_of_random_text() {
    let tok = smollm2();
    let pools: [&[char]; 6] = [
        &[
            'a', 'Z', '0', '9', ' ', ' ', '\n', '\t', '.', '\'', '<', '|', '>',
        ],
        &['é', 'ß', 'Ω', 'ж', 'ñ', '\u{301}', '\u{a0}'],
        &['日', '本', '語', '中', '한', '。'],
        &['😀', '👍', '\u{1f3fd}', '\u{200d}', '🇫', '🇷', '🤗'],
        &['\u{0}', '\u{1}', '\u{7f}', '\u{fffd}', '\u{10ffff}', '\r'],
        &['1', '2', '3', '4', '5', '6', '7', '8'],
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..300 {
        let len = next(40);
        let text: String = (0..len)
            .map(|_| {
                let pool = pools[next(pools.len())];
                pool[next(pool.len())]
            })
            .collect();
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{ids:?}");
    }
}

#[test]
fn unsupported_tokenizer_model_names_what_is_supported() {
    let err = Tokenizer::from_vocab(&FileVocab {
        model: "llama".into(),
        ..smollm2_vocab()
    })
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::UnsupportedModel { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("`llama`") && message.contains("gpt2"),
        "{message}"
    );
    assert!(message.contains("tokenizer.json"), "{message}");
}

#[test]
fn unsupported_pre_tokenizer_names_what_is_supported() {
    let err = Tokenizer::from_vocab(&FileVocab {
        pre: "falcon".into(),
        ..smollm2_vocab()
    })
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(
        err,
        TokenizerError::UnsupportedPreTokenizer { .. }
    ));
    assert!(
        message.contains("`falcon`") && message.contains("smollm"),
        "{message}"
    );
}

#[test]
fn malformed_vocabularies_get_clear_errors() {
    let base = smollm2_vocab();
    let mut cases: Vec<(&str, FileVocab)> = Vec::new();
    cases.push((
        "no tokens",
        FileVocab {
            tokens: vec![],
            ..base.clone()
        },
    ));
    let mut v = base.clone();
    v.token_types.pop();
    cases.push(("token types", v));
    let mut v = base.clone();
    v.merges[10] = "nospace".into();
    cases.push(("merge 10", v));
    let mut v = base.clone();
    v.merges[3] = "Ġ NOT_A_TOKEN".into();
    cases.push(("NOT_A_TOKEN", v));
    cases.push((
        "BOS token id 60000",
        FileVocab {
            bos_token_id: Some(60000),
            ..base.clone()
        },
    ));
    cases.push((
        "asks for a BOS",
        FileVocab {
            add_bos_token: true,
            bos_token_id: None,
            ..base.clone()
        },
    ));
    for (needle, vocab) in cases {
        let err = Tokenizer::from_vocab(&vocab).unwrap_err();
        assert!(
            matches!(err, TokenizerError::InvalidVocab(_)),
            "{needle}: {err}"
        );
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[test]
fn decoding_an_id_outside_the_vocabulary_is_an_error() {
    let err = smollm2().decode(&[504, 49152], false).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::UnknownTokenId {
                id: 49152,
                vocab_size: 49152
            }
        ),
        "{err}"
    );
}
