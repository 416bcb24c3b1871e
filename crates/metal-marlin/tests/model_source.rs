//! What `--model` accepts: paths, Hugging Face ids fetched from the hub (unreachable here: a
//! closed loopback port) or found in the hub cache with no network.

mod support;

use std::path::Path;
use std::time::Duration;

use support::hub::MockHub;
use support::{Scratch, run, run_env};

const QUICK: Duration = Duration::from_secs(30);

#[test]
fn a_missing_path_is_named_and_never_sent_to_the_hub() {
    let scratch = Scratch::new("missing");
    for model in ["/no/such/model.gguf", "./x", "models/typo.gguf", "x"] {
        for args in [
            vec!["generate", "--model", model, "hi"],
            vec!["inspect", model],
            vec!["chat", "--model", model],
        ] {
            let out = run(&args, "", &scratch.0, QUICK);
            assert!(!out.ok, "{args:?}");
            let first = out.stderr.lines().next().unwrap_or_default();
            assert!(
                first.contains(&format!("{model}: no such file or folder")),
                "{args:?}: {first}"
            );
            assert!(!out.stderr.contains("hub"), "{args:?}: {}", out.stderr);
        }
    }
}

#[test]
/// A refused connection is an error at once, not a hang (the run's limit guards against one;
/// no timing is asserted).
fn an_unreachable_hub_gives_a_clear_error() {
    let scratch = Scratch::new("offline");
    let out = run(&["inspect", "no-org/no-model"], "", &scratch.0, QUICK);
    assert!(!out.ok);
    for needle in [
        "could not fetch no-org/no-model",
        "unreachable",
        "--model PATH",
    ] {
        assert!(out.stderr.contains(needle), "{needle} in: {}", out.stderr);
    }

    let offline = [("HF_HUB_OFFLINE", "1")];
    let out = run_env(
        &["generate", "--model", "no-org/no-model", "hi"],
        "",
        &scratch.0,
        &offline,
        QUICK,
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("HF_HUB_OFFLINE is set"),
        "{}",
        out.stderr
    );
}

/// A repository in the hub cache's layout, its snapshot holding `files` (name, source).
fn cached_repo(hf_home: &Path, repo: &str, commit: &str, files: &[(&str, &Path)]) {
    let dir = hf_home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs").join("main"), commit).unwrap();
    for (name, source) in files {
        // The hub's snapshots are links into blobs/; a link to the file is the same to a reader.
        #[cfg(unix)]
        std::os::unix::fs::symlink(source, snapshot.join(name)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(source, snapshot.join(name)).unwrap();
    }
}

#[test]
fn a_model_in_the_hub_cache_loads_without_the_network() {
    let model = marlin_testkit::smollm2_gguf();
    let scratch = Scratch::new("cached");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    cached_repo(
        &scratch.0,
        "test-org/smollm2-gguf",
        commit,
        &[("smollm2.Q4_1.gguf", &model)],
    );

    // The hub is unreachable: the cached snapshot is used, and said so.
    let out = run(&["inspect", "test-org/smollm2-gguf"], "", &scratch.0, QUICK);
    assert!(out.ok, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("llama"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("using the cached test-org/smollm2-gguf"),
        "{}",
        out.stderr
    );

    // Offline, by revision: the commit names its snapshot; the model runs.
    let id = format!("test-org/smollm2-gguf@{commit}");
    let offline = [("HF_HUB_OFFLINE", "1")];
    let args = [
        "generate",
        "--model",
        &id,
        "--max-tokens",
        "3",
        "The capital of France is",
    ];
    let out = run_env(&args, "", &scratch.0, &offline, Duration::from_secs(120));
    assert!(out.ok, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("Paris"), "{}", out.stdout);
}

#[test]
fn an_incomplete_snapshot_is_not_used() {
    let scratch = Scratch::new("incomplete");
    let config = scratch.0.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    cached_repo(
        &scratch.0,
        "test-org/partial",
        "abc",
        &[("config.json", &config)],
    );
    let out = run(&["inspect", "test-org/partial"], "", &scratch.0, QUICK);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("has no complete copy"),
        "{}",
        out.stderr
    );
}

fn snapshot(hf_home: &Path, repo: &str, commit: &str) -> std::path::PathBuf {
    let dir = format!("models--{}", repo.replace('/', "--"));
    hf_home.join("hub").join(dir).join("snapshots").join(commit)
}

#[test]
fn a_gguf_repository_is_fetched_once_then_found_offline() {
    let model = marlin_testkit::smollm2_gguf();
    let scratch = Scratch::new("fetch-gguf");
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let files = vec![
        (
            "smollm2.Q4_1.gguf".to_string(),
            std::fs::read(&model).unwrap(),
        ),
        ("README.md".to_string(), b"# a model".to_vec()),
    ];
    let hub = MockHub::start("test-org/fetched", commit, files);
    let online = [("HF_ENDPOINT", hub.endpoint.as_str())];
    let out = run_env(
        &["inspect", "test-org/fetched"],
        "",
        &scratch.0,
        &online,
        QUICK,
    );
    assert!(out.ok, "stderr: {}", out.stderr);
    assert!(out.stdout.contains("llama"), "{}", out.stdout);
    let snap = snapshot(&scratch.0, "test-org/fetched", commit);
    assert!(snap.join("smollm2.Q4_1.gguf").is_file());
    assert!(!snap.join("README.md").exists());
    let refs = scratch.0.join("hub/models--test-org--fetched/refs/main");
    assert_eq!(std::fs::read_to_string(refs).unwrap().trim(), commit);
    assert_eq!(hub.downloads.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Online again: the hub is asked for the file list only.
    let out = run_env(
        &["inspect", "test-org/fetched"],
        "",
        &scratch.0,
        &online,
        QUICK,
    );
    assert!(out.ok, "stderr: {}", out.stderr);
    assert_eq!(hub.downloads.load(std::sync::atomic::Ordering::SeqCst), 1);

    let offline = [("HF_HUB_OFFLINE", "1")];
    let out = run_env(
        &["inspect", "test-org/fetched"],
        "",
        &scratch.0,
        &offline,
        QUICK,
    );
    assert!(out.ok, "stderr: {}", out.stderr);
}

#[test]
fn a_hugging_face_repository_fetches_its_model_files_only() {
    let scratch = Scratch::new("fetch-hf");
    let commit = "00000000000000000000000000000000000000aa";
    let index = r#"{"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors", "c.weight": "model-00001-of-00002.safetensors"}}"#;
    let names = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut files: Vec<(String, Vec<u8>)> = names
        .iter()
        .map(|n| (n.to_string(), b"{}".to_vec()))
        .collect();
    files.push((
        "model.safetensors.index.json".into(),
        index.as_bytes().to_vec(),
    ));
    files.push(("README.md".into(), b"# a model".to_vec()));
    files.push(("original/consolidated.00.pth".into(), b"big".to_vec()));
    let hub = MockHub::start("test-org/folder", commit, files);
    let online = [("HF_ENDPOINT", hub.endpoint.as_str())];
    // The placeholder files do not load; what is checked here is what was fetched, and where.
    let out = run_env(
        &["inspect", "test-org/folder"],
        "",
        &scratch.0,
        &online,
        QUICK,
    );
    assert!(!out.stderr.contains("could not fetch"), "{}", out.stderr);
    let snap = snapshot(&scratch.0, "test-org/folder", commit);
    for name in names.iter().chain(&["model.safetensors.index.json"]) {
        assert!(
            snap.join(name).is_file(),
            "{name} not fetched; stderr: {}",
            out.stderr
        );
    }
    assert!(!snap.join("README.md").exists());
    assert!(!snap.join("original").exists());
    assert!(
        out.stderr.contains(&snap.display().to_string()),
        "{}",
        out.stderr
    );
}

/// A Hugging Face folder repository end to end: fetched from the (stand-in) hub into the cache,
/// loaded and run, then run again offline from the cache. The folder is the tiny transformers-made
/// Qwen3 fixture (two shards and an index).
#[test]
fn a_folder_repository_is_fetched_then_runs_online_and_offline() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../marlin-models/tests/fixtures/tiny/qwen3")
        .canonicalize()
        .unwrap();
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&fixture)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "reference.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    let scratch = Scratch::new("fetch-tiny");
    let commit = "00000000000000000000000000000000000000bb";
    let hub = MockHub::start("test-org/tiny-qwen3", commit, files);
    let args = [
        "generate",
        "--model",
        "test-org/tiny-qwen3",
        "--max-tokens",
        "4",
        "--json",
        "hello",
    ];
    let online = [("HF_ENDPOINT", hub.endpoint.as_str())];
    let first = run_env(&args, "", &scratch.0, &online, Duration::from_secs(120));
    assert!(first.ok, "stderr: {}", first.stderr);
    let offline = [("HF_HUB_OFFLINE", "1")];
    let second = run_env(&args, "", &scratch.0, &offline, Duration::from_secs(120));
    assert!(second.ok, "stderr: {}", second.stderr);
    let ids = |out: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(out).unwrap()["token_ids"].clone()
    };
    assert_eq!(ids(&first.stdout).as_array().map(Vec::len), Some(4));
    assert_eq!(ids(&first.stdout), ids(&second.stdout));
}
