//! A Session reuses the cached prefix of each turn and answers as a fresh generation would.

use marlin_cpu::CpuBackend;
use marlin_engine::chat::Message;
use marlin_engine::generate::GenerateParams;
use marlin_engine::{Engine, TextParams};
use marlin_models::Precision;

#[test]
fn a_second_turn_reuses_the_first_and_matches_a_fresh_run() {
    let path = marlin_testkit::smollm2_gguf();
    let engine = Engine::load_on(&path, CpuBackend::detect(), Precision::F32).unwrap();
    let params = TextParams {
        generate: GenerateParams {
            max_tokens: 24,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut session = engine.session().unwrap();
    assert_eq!(session.context_len(), 8192);
    let mut history = vec![Message::user("What is the capital of France?")];
    let prompt = engine.encode_chat(&history).unwrap();
    let first = session.generate(&prompt, &params, |_| {}).unwrap();
    assert_eq!(first.cached_prompt_tokens, 0);
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    assert!(session.cached_tokens() >= prompt.len());

    history.push(Message::assistant(first.text.clone()));
    history.push(Message::user("And what is the capital of Germany?"));
    let prompt = engine.encode_chat(&history).unwrap();
    let mut streamed = String::new();
    let second = session
        .generate(&prompt, &params, |t| streamed.push_str(t))
        .unwrap();
    // The first turn's prompt and reply were not prefilled again.
    assert!(
        second.cached_prompt_tokens >= first.prompt_token_ids.len() + first.token_ids.len() - 1,
        "{} cached",
        second.cached_prompt_tokens
    );
    assert_eq!(streamed, second.text);
    let fresh = engine.generate(&prompt, &params, |_| {}).unwrap();
    assert_eq!(
        second.token_ids, fresh.token_ids,
        "{:?} vs {:?}",
        second.text, fresh.text
    );

    // A different conversation shares only the template's opening; after reset, nothing.
    let other = engine
        .encode_chat(&[Message::user("Name a color.")])
        .unwrap();
    let third = session.generate(&other, &params, |_| {}).unwrap();
    assert!(third.cached_prompt_tokens < other.len());
    session.reset();
    assert_eq!(session.cached_tokens(), 0);
    let again = session.generate(&other, &params, |_| {}).unwrap();
    assert_eq!(again.cached_prompt_tokens, 0);
    assert_eq!(again.token_ids, third.token_ids);
}
