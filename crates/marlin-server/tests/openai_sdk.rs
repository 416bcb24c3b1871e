//! The official `openai` Python package against the server: chat (plain and streaming),
//! completions, models and errors (tests/python/openai_sdk.py). The package goes into a
//! virtualenv under the target folder, made on the first run. Without Python or pip the test
//! fails when CI=true and is skipped (with the reason printed) elsewhere.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use marlin_server::ServerConfig;
use support::*;

/// A Python with `openai`, or why there is none.
fn python_with_openai() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = venv.join(if cfg!(windows) {
        "Scripts/python.exe"
    } else {
        "bin/python"
    });
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    if !python.exists() {
        let base = if cfg!(windows) { "python" } else { "python3" };
        run(
            Command::new(base).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    if run(
        Command::new(&python).args(["-c", "import openai"]),
        "import openai",
    )
    .is_err()
    {
        let pip = [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openai",
        ];
        run(Command::new(&python).args(pip), "pip install openai")?;
    }
    Ok(python)
}

#[test]
fn the_openai_python_sdk_works_against_the_server() {
    let python = match python_with_openai() {
        Ok(p) => p,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run the openai SDK test, but: {why}")
        }
        Err(why) => {
            eprintln!("skipping the openai SDK test: {why}");
            return;
        }
    };
    let server = start(ServerConfig {
        api_key: Some("sesame".into()),
        ..config()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let out = Command::new(python)
        .arg(script)
        .env("MARLIN_BASE_URL", format!("http://{}/v1", server.addr()))
        .env("MARLIN_MODEL", MODEL)
        .env("MARLIN_API_KEY", "sesame")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the SDK script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    server.stop().unwrap();
}
