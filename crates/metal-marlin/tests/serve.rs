//! `metal-marlin serve`: prints its URL and a ready line, answers, and stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use marlin_server::client;

#[cfg(unix)]
#[test]
fn serve_prints_its_url_answers_and_stops_on_sigterm() {
    let model = marlin_testkit::smollm2_gguf();
    let mut child = Command::new(env!("CARGO_BIN_EXE_metal-marlin"))
        .args([
            "serve",
            model.to_str().unwrap(),
            "--device",
            "cpu",
            "--port",
            "0",
        ])
        .args(["--served-model-name", "smol", "--api-key", "k"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("serving smol on CPU"), "{first}");
    let url = first.rsplit(' ').next().unwrap();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .parse()
        .unwrap_or_else(|_| panic!("no address in {first}"));
    assert!(lines.next().unwrap().unwrap().starts_with("ready"));

    assert_eq!(
        client::request(addr, "GET", "/health", &[], None)
            .unwrap()
            .status,
        200
    );
    let key = [("Authorization", "Bearer k")];
    let models = client::request(addr, "GET", "/v1/models", &key, None).unwrap();
    assert_eq!(models.json()["data"][0]["id"], "smol");
    let body = r#"{"model": "smol", "prompt": "The capital of France is", "max_tokens": 2, "temperature": 0}"#;
    let r = client::request(addr, "POST", "/v1/completions", &key, Some(body.as_bytes())).unwrap();
    assert_eq!(r.json()["choices"][0]["text"], " Paris.", "{}", r.text());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
