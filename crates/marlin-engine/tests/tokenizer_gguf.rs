//! The real SmolLM2-135M-Instruct GGUF, found through `MARLIN_SMOLLM2_GGUF`: its vocabulary, read
//! by the GGUF reader, is the one the committed fixtures hold, and builds the same tokenizer.
//! The file comes from `marlin_testkit::smollm2_gguf`.

mod tokenizer_support;

use marlin_engine::{ChatTemplate, Message, Tokenizer};
use marlin_models::gguf::{GgufFile, read_vocab};
use tokenizer_support::{ids, reference, smollm2_vocab};

#[test]
fn smollm2_gguf_vocabulary_builds_the_reference_tokenizer() {
    let path = marlin_testkit::smollm2_gguf();
    let vocab = read_vocab(&GgufFile::open(&path).unwrap()).unwrap();
    assert_eq!(
        vocab,
        smollm2_vocab(),
        "the fixtures no longer match the GGUF"
    );

    let tok = Tokenizer::from_vocab(&vocab).unwrap();
    for case in reference()["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }

    // The chat prompt the CLI builds: template, then tokens.
    let template = ChatTemplate::new(
        vocab.chat_template.as_deref().unwrap(),
        tok.bos_token().unwrap(),
        tok.eos_token().unwrap(),
    )
    .unwrap();
    let prompt = template
        .render(&[Message::user("What is the capital of France?")], true)
        .unwrap();
    let ids = tok.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], 1, "starts with <|im_start|>");
    assert_eq!(tok.decode(&ids, false).unwrap(), prompt);
}
