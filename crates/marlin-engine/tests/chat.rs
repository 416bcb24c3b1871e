//! Chat templates rendered as transformers' `apply_chat_template` renders them.

mod tokenizer_support;

use marlin_engine::{ChatTemplate, ChatTemplateError, Message};
use tokenizer_support::{reference, smollm2_vocab};

fn messages(value: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(value.clone()).expect("fixture messages are {role, content}")
}

#[test]
fn templates_render_as_in_transformers() {
    let reference = reference();
    let now = reference["fixed_now_unix"].as_i64().unwrap();
    let templates = &reference["templates"];
    let cases = reference["chat_cases"].as_array().unwrap();
    assert!(cases.len() > 20);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let t = &templates[name];
        let template = ChatTemplate::with_fixed_time(
            t["source"].as_str().unwrap(),
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
            now,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut extra = serde_json::Map::new();
        if let Some(tools) = case.get("tools") {
            extra.insert("tools".into(), tools.clone());
        }
        let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let what = format!("{name}/{}/{add_generation_prompt}", case["conversation"]);
        let result =
            template.render_with(&messages(&case["messages"]), add_generation_prompt, &extra);
        match (result, case.get("rendered"), case.get("error")) {
            (Ok(text), Some(expected), _) => assert_eq!(text, expected.as_str().unwrap(), "{what}"),
            (Err(ChatTemplateError::Rejected(message)), None, Some(expected)) => {
                assert_eq!(message, expected.as_str().unwrap(), "{what}")
            }
            (other, rendered, error) => {
                panic!("{what}: got {other:?}, expected {rendered:?} / error {error:?}")
            }
        }
    }
}

#[test]
fn the_gguf_template_is_the_one_tested() {
    let reference = reference();
    assert_eq!(
        smollm2_vocab().chat_template.as_deref(),
        reference["templates"]["smollm2"]["source"].as_str()
    );
}

#[test]
fn smollm2_prompt_for_a_question() {
    let source = smollm2_vocab().chat_template.unwrap();
    let template = ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>").unwrap();
    let prompt = template
        .render(&[Message::user("What is the capital of France?")], true)
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let err =
        ChatTemplate::new("line one\n{% for m in messages %}\n{{ m.content }", "", "").unwrap_err();
    match &err {
        ChatTemplateError::Syntax {
            line: Some(line), ..
        } => assert!(*line >= 2, "{err}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err.to_string().contains("not valid Jinja at line"), "{err}");
}

#[test]
fn render_errors_name_the_line_and_the_problem() {
    let template =
        ChatTemplate::new("ok\n{{ messages[0].content.nosuchmethod() }}", "", "").unwrap();
    let err = template.render(&[Message::user("hi")], false).unwrap_err();
    match &err {
        ChatTemplateError::Render { line, message } => {
            assert_eq!(*line, Some(2), "{err}");
            assert!(
                message.contains("nosuchmethod") || message.contains("unknown method"),
                "{err}"
            );
        }
        other => panic!("expected a render error, got {other:?}"),
    }
}

#[test]
fn raise_exception_is_a_rejection_with_the_templates_message() {
    let template = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}",
        "",
        "",
    )
    .unwrap();
    let err = template
        .render(&[Message::assistant("hi")], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the chat template rejected the conversation: Conversations must start with a user message"
    );
    assert_eq!(template.render(&[Message::user("hi")], false).unwrap(), "");
}

#[test]
fn strftime_now_uses_the_clock() {
    let template = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "").unwrap();
    let year: i64 = template.render(&[], false).unwrap().parse().unwrap();
    assert!((2024..3000).contains(&year), "{year}");
}

#[test]
fn extra_variables_reach_the_template() {
    let template = ChatTemplate::new(
        "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{{ tools is none }}",
        "",
        "",
    )
    .unwrap();
    let mut extra = serde_json::Map::new();
    assert_eq!(template.render_with(&[], false, &extra).unwrap(), "True");
    extra.insert("enable_thinking".into(), false.into());
    assert_eq!(
        template.render_with(&[], false, &extra).unwrap(),
        "<think></think>True"
    );
}
