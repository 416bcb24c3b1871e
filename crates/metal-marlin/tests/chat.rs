//! `metal-marlin chat` through a pipe, on the default model (greedy).

mod support;

use std::time::Duration;

use support::{Scratch, run};

/// `(prompt tokens, cached tokens, reply tokens)` of each reply, from the report lines on
/// stderr (`[prompt N tokens, C cached; ...; reply R tokens at ...]`).
fn turns(stderr: &str) -> Vec<(usize, usize, usize)> {
    let number_after = |line: &str, key: &str| -> usize {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    };
    stderr
        .lines()
        .filter(|l| l.starts_with("[prompt "))
        .map(|l| {
            (
                number_after(l, "[prompt "),
                number_after(l, "tokens, "),
                number_after(l, "reply "),
            )
        })
        .collect()
}

#[test]
fn chat_keeps_the_history_reuses_the_cache_and_resets() {
    let model = marlin_testkit::smollm2_gguf();
    let scratch = Scratch::new("chat");
    let q = "What is the capital of France?";
    let input = format!("{q}\nTell me one more fact about it.\n/reset\n{q}\n/exit\n{q}\n");
    let out = run(
        &[
            "chat",
            "--model",
            model.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            "40",
        ],
        &input,
        &scratch.0,
        Duration::from_secs(300),
    );
    assert!(out.ok, "stderr: {}", out.stderr);
    let first_reply: String = out.stdout.chars().take(200).collect();
    assert!(first_reply.contains("Paris"), "stdout: {}", out.stdout);
    // Piped: no banner, no prompt marker.
    assert!(!out.stderr.contains("metal-marlin chat:"), "{}", out.stderr);
    assert!(!out.stdout.contains("> "), "{}", out.stdout);
    assert!(
        out.stderr.contains("(conversation cleared)"),
        "{}",
        out.stderr
    );
    let t = turns(&out.stderr);
    // Three replies: the question after /exit is never read.
    assert_eq!(t.len(), 3, "stderr: {}", out.stderr);
    let [(p1, c1, r1), (p2, c2, _), (p3, c3, r3)] = [t[0], t[1], t[2]];
    assert_eq!(c1, 0);
    // The second prompt holds the first exchange, and its first part came from the cache.
    assert!(p2 > p1 + r1, "{t:?}");
    assert!(c2 >= p1, "{t:?}");
    // After /reset the template starts over: the same prompt as the first, nothing cached,
    // and (greedy) the same reply.
    assert_eq!((p3, c3, r3), (p1, 0, r1), "{t:?}");
}
