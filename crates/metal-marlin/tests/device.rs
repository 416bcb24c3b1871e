//! `--device` on the commands: the GPU (lavapipe in CI) and the CPU give the same greedy
//! tokens through the command line, and `inspect` and `bench` name the device.

mod support;

use std::time::Duration;

use support::{Scratch, run};

const LIMIT: Duration = Duration::from_secs(300);

/// `generate --json` greedy token ids on `device`.
fn greedy_ids(device: &str, scratch: &Scratch) -> Vec<u64> {
    let model = marlin_testkit::smollm2_gguf();
    let model = model.to_str().unwrap();
    let args = [
        "generate",
        "--model",
        model,
        "--device",
        device,
        "--json",
        "--temperature",
        "0",
        "--max-tokens",
        "8",
        "The capital of France is",
    ];
    let out = run(&args, "", &scratch.0, LIMIT);
    assert!(out.ok, "--device {device}: {}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

#[test]
fn generate_gives_the_same_tokens_on_every_device() {
    let scratch = Scratch::new("device");
    let cpu = greedy_ids("cpu", &scratch);
    assert_eq!(cpu[..5], [7042, 30, 198, 198, 504]);
    // auto: a hardware GPU where there is one, else the CPU; the same tokens either way.
    assert_eq!(greedy_ids("auto", &scratch), cpu);
    if marlin_gpu::test_gpu().is_some() {
        assert_eq!(greedy_ids("gpu", &scratch), cpu);
    }
}

#[test]
fn inspect_and_bench_name_the_device() {
    let scratch = Scratch::new("device-report");
    let model = marlin_testkit::smollm2_gguf();
    let model = model.to_str().unwrap();
    let mut devices = vec![("cpu", "CPU (")];
    if marlin_gpu::test_gpu().is_some() {
        devices.push(("gpu", "GPU "));
    }
    for (device, named) in devices {
        let out = run(
            &["inspect", model, "--device", device],
            "",
            &scratch.0,
            LIMIT,
        );
        assert!(out.ok, "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("device        {named}")),
            "{}",
            out.stdout
        );
        let args = [
            "bench",
            "--model",
            model,
            "--device",
            device,
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "2",
            "--runs",
            "1",
            "--json",
        ];
        let out = run(&args, "", &scratch.0, LIMIT);
        assert!(out.ok, "{}", out.stderr);
        let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let reported = json["device"].as_str().unwrap();
        assert!(reported.starts_with(named), "{reported}");
    }
}

#[test]
fn bench_synthetic_builds_a_model_of_the_preset_and_measures_it() {
    let scratch = Scratch::new("synthetic");
    let args = [
        "bench",
        "--synthetic",
        "smollm2-135m",
        "--format",
        "int4",
        "--group-size",
        "128",
        "--device",
        "cpu",
        "--prompt-tokens",
        "4",
        "--gen-tokens",
        "2",
        "--runs",
        "1",
        "--json",
    ];
    let out = run(&args, "", &scratch.0, LIMIT);
    assert!(out.ok, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["scheme"], "int4 g128");
    assert!(json["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    let fraction = json["fraction_of_roofline"].as_f64().unwrap();
    assert!(fraction > 0.0 && fraction.is_finite(), "{fraction}");
    let out = run(
        &["bench", "--synthetic", "llama-9000"],
        "",
        &scratch.0,
        LIMIT,
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("llama-3.1-8b"), "{}", out.stderr);
}

/// Without a usable XDG_RUNTIME_DIR (ssh sessions, containers, CI) the GPU search of
/// `--device auto` made libwayland print an error on every run; the binary now points it at a
/// private folder first.
#[test]
fn no_runtime_dir_no_wayland_error() {
    let scratch = Scratch::new("xdg");
    let model = marlin_testkit::smollm2_gguf();
    let args = [
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--max-tokens",
        "1",
        "Hi",
    ];
    let out = support::run_env(&args, "", &scratch.0, &[("XDG_RUNTIME_DIR", "")], LIMIT);
    assert!(out.ok, "{}", out.stderr);
    assert!(!out.stderr.contains("XDG_RUNTIME_DIR"), "{}", out.stderr);
}
