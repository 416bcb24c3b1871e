//! Loading a Hugging Face tokenizer.json (and the BOS/EOS of a tokenizer_config.json beside it).

mod tokenizer_support;

use std::path::PathBuf;

use marlin_engine::{Tokenizer, TokenizerError};
use tokenizer_support::{ids, reference, smollm2_vocab};

/// A fresh folder under the system temp dir, unique per test and process.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("marlin-tok-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The GGUF-built tokenizer written as tokenizer.json and loaded back encodes every fixture
/// string as transformers does: the file path and the model-file path agree.
#[test]
fn tokenizer_json_round_trip_matches_transformers() {
    let built = Tokenizer::from_vocab(&smollm2_vocab()).unwrap();
    let dir = temp_dir("roundtrip");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, built.to_json().unwrap()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>", "special": true}}"#,
    )
    .unwrap();

    let tok = Tokenizer::from_file(&path).unwrap();
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_id(), Some(2));
    assert_eq!(tok.vocab_size(), built.vocab_size());
    for case in reference()["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        assert_eq!(tok.encode(text, false).unwrap(), expected, "{text:?}");
        assert_eq!(
            tok.decode(&expected, false).unwrap(),
            case["decoded"].as_str().unwrap()
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn without_tokenizer_config_bos_and_eos_are_unset_until_given() {
    let dir = temp_dir("noconfig");
    let path = dir.join("tokenizer.json");
    let json = Tokenizer::from_vocab(&smollm2_vocab())
        .unwrap()
        .to_json()
        .unwrap();
    std::fs::write(&path, json).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    assert_eq!((tok.bos_token_id(), tok.eos_token_id()), (None, None));
    let tok = tok.with_bos_token_id(Some(1)).with_eos_token_id(Some(2));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_get_errors_naming_the_file() {
    let dir = temp_dir("bad");
    let missing = dir.join("missing.json");
    let err = Tokenizer::from_file(&missing).unwrap_err();
    assert!(matches!(err, TokenizerError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.json"), "{err}");

    let garbage = dir.join("tokenizer.json");
    std::fs::write(&garbage, b"{\"model\": 12").unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err();
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    // A valid tokenizer.json, but a tokenizer_config.json naming a token it does not have.
    let json = Tokenizer::from_vocab(&smollm2_vocab())
        .unwrap()
        .to_json()
        .unwrap();
    std::fs::write(&garbage, json).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<nope>"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_file(&garbage).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    assert!(err.to_string().contains("<nope>"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
