//! Hugging Face ids: the model's files fetched with `hf-hub` into the hub cache that Python's
//! `huggingface_hub` also uses, or found there with no network when the hub cannot be reached
//! (or `HF_HUB_OFFLINE` is set).
//!
//! The cache layout (`<cache>/models--org--name/`): `refs/<revision>` holds a commit hash,
//! `snapshots/<commit>/` the files of that commit (links into `blobs/`).

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// `org/name`, optionally `@revision` (a branch, tag or commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: Option<String>,
}

impl HubId {
    /// An id in Hugging Face's syntax, or None: one `/` between two names of letters, digits,
    /// `-`, `_` and `.` (not starting with `.` or `-`, no `..`), and no name ending like a model
    /// file (`x/model.gguf` is a mistyped path, not a repository).
    pub fn parse(s: &str) -> Option<HubId> {
        let (repo, revision) = match s.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (s, None),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 96
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.starts_with(['.', '-'])
                && !p.contains("..")
        };
        let file_like = [".gguf", ".safetensors", ".bin", ".json"]
            .iter()
            .any(|ext| name.to_ascii_lowercase().ends_with(ext));
        let rev_ok = revision.is_none_or(|r| {
            !r.is_empty()
                && !r.contains("..")
                && !r.starts_with('/')
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        });
        (part_ok(org) && part_ok(name) && !file_like && rev_ok).then(|| HubId {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }

    fn hf_repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision().into())
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(r) => write!(f, "{}@{r}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// The local path of `id`'s model (its snapshot folder, or the GGUF file of a GGUF-only
/// repository): from the hub, or from the cache when offline or the hub is unreachable.
pub fn resolve(id: &HubId) -> anyhow::Result<PathBuf> {
    let cache = cache_dir().ok_or_else(|| {
        anyhow!("no Hugging Face cache folder: set HF_HOME or HF_HUB_CACHE (or HOME)")
    })?;
    if env_flag("HF_HUB_OFFLINE") {
        return cached_model(&cache, id).ok_or_else(|| {
            anyhow!(
                "{id} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: unset it \
                 to download the model, or download its files and pass the folder with \
                 --model PATH",
                cache.display()
            )
        });
    }
    match fetch(&cache, id) {
        Ok(path) => Ok(path),
        Err(Failure::Unreachable(why)) => match cached_model(&cache, id) {
            Some(path) => {
                eprintln!("the Hugging Face hub is unreachable ({why}); using the cached {id}");
                Ok(path)
            }
            None => bail!(
                "could not fetch {id}: the Hugging Face hub{} is unreachable ({why}), and the \
                 cache ({}) has no complete copy of it. Check the network (and HF_ENDPOINT, \
                 proxies), or download config.json, tokenizer.json, tokenizer_config.json and \
                 model.safetensors (or the index and its shards) into a folder and pass it with \
                 --model PATH",
                endpoint().map(|e| format!(" at {e}")).unwrap_or_default(),
                cache.display()
            ),
        },
        Err(Failure::Refused(err)) => Err(err),
    }
}

/// Why a fetch failed: the hub could not be reached (the cache may help), or it answered no.
enum Failure {
    Unreachable(String),
    Refused(anyhow::Error),
}

/// Asks the hub for the revision's commit and file list, then downloads what the cache lacks
/// of that commit.
fn fetch(cache: &Path, id: &HubId) -> Result<PathBuf, Failure> {
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_progress(std::io::stderr().is_terminal());
    if let Some(e) = endpoint() {
        builder = builder.with_endpoint(e);
    }
    if let Some(token) = token() {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| classify(id, e))?;
    let repo = api.repo(id.hf_repo());
    let info = repo.info().map_err(|e| classify(id, e))?;
    let snapshot = repo_dir(cache, id).join("snapshots").join(&info.sha);
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let wanted = wanted_files(id, &files).map_err(Failure::Refused)?;
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|f| !snapshot.join(f).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "fetching {id} ({} files) into {}",
            missing.len(),
            cache.display()
        );
    }
    // Every file must land in this commit's snapshot: a branch that moves on meanwhile would
    // mix two commits' files.
    let get = |file: &str| -> Result<(), Failure> {
        let path = repo.download(file).map_err(|e| classify(id, e))?;
        if path.starts_with(&snapshot) {
            Ok(())
        } else {
            let err = anyhow!("{id} changed on the hub while downloading; run the command again");
            Err(Failure::Refused(err))
        }
    };
    for file in &missing {
        get(file)?;
    }
    for shard in index_shards(&snapshot).map_err(Failure::Refused)? {
        if !snapshot.join(&shard).exists() {
            get(&shard)?;
        }
    }
    // Point the revision at this commit, so an offline run finds it.
    let _ = Cache::new(cache.to_path_buf())
        .repo(id.hf_repo())
        .create_ref(&info.sha);
    model_in(&snapshot).ok_or_else(|| {
        Failure::Refused(anyhow!(
            "{id}: the files fetched into {} do not make a model",
            snapshot.display()
        ))
    })
}

/// The files of `files` (the repository's list) that a model needs: configuration, tokenizer,
/// chat template and weights (one safetensors file, or the index: its shards come after it);
/// or the one GGUF file of a GGUF-only repository.
fn wanted_files(id: &HubId, files: &[&str]) -> anyhow::Result<Vec<String>> {
    let has = |f: &str| files.contains(&f);
    if has("config.json") {
        let optional = [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        ];
        let weights = if has("model.safetensors") {
            "model.safetensors"
        } else if has("model.safetensors.index.json") {
            "model.safetensors.index.json"
        } else {
            bail!("{id} has no model.safetensors (nor model.safetensors.index.json) to load")
        };
        // The small files first: an interrupted fetch then lacks the weights, which marks the
        // snapshot incomplete.
        let mut out = vec!["config.json".to_string()];
        out.extend(optional.iter().filter(|f| has(f)).map(|f| f.to_string()));
        out.push(weights.into());
        return Ok(out);
    }
    let ggufs: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| f.ends_with(".gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(vec![one.to_string()]),
        [] => bail!("{id} has neither config.json with safetensors nor a GGUF file"),
        many => bail!(
            "{id} has no config.json and {} GGUF files ({}): download the one you want and \
             pass it with --model PATH",
            many.len(),
            many.join(", ")
        ),
    }
}

/// The shard files that `model.safetensors.index.json` in `dir` lists (none without an index).
fn index_shards(dir: &Path) -> anyhow::Result<Vec<String>> {
    let index = dir.join("model.safetensors.index.json");
    let Ok(text) = std::fs::read_to_string(&index) else {
        return Ok(Vec::new());
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("{}: no weight_map", index.display()))?;
    let mut shards: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(str::to_string)
        .collect();
    shards.sort_unstable();
    shards.dedup();
    // Shard names come from the network: none may leave the snapshot folder.
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains("..") || s.starts_with('/'))
    {
        bail!("{}: shard name {bad:?} is not a file name", index.display());
    }
    Ok(shards)
}

/// The model in a complete cached snapshot of `id`, if the cache has one.
fn cached_model(cache: &Path, id: &HubId) -> Option<PathBuf> {
    let repo = repo_dir(cache, id);
    let rev = id.revision();
    // A branch or tag names a commit through refs/; a commit hash names its snapshot directly.
    let commit = std::fs::read_to_string(repo.join("refs").join(rev))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| rev.to_string());
    model_in(&repo.join("snapshots").join(commit))
}

/// What to load from a snapshot folder, if it is complete: the folder when it has config.json
/// and all its weights; the file when it holds a single GGUF file and no config.json.
fn model_in(dir: &Path) -> Option<PathBuf> {
    if dir.join("config.json").is_file() {
        let single = dir.join("model.safetensors").is_file();
        let sharded = dir.join("model.safetensors.index.json").is_file()
            && index_shards(dir)
                .is_ok_and(|s| !s.is_empty() && s.iter().all(|f| dir.join(f).is_file()));
        return (single || sharded).then(|| dir.to_path_buf());
    }
    let mut ggufs = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && p.is_file());
    match (ggufs.next(), ggufs.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

fn repo_dir(cache: &Path, id: &HubId) -> PathBuf {
    cache.join(id.hf_repo().folder_name())
}

/// Turns an hf-hub error into an unreachable hub (worth trying the cache) or a refusal.
fn classify(id: &HubId, err: ApiError) -> Failure {
    let status = |code: u16| match code {
        401 | 403 | 404 => Failure::Refused(anyhow!(
            "{id} is not on the Hugging Face hub, or is private or gated (HTTP {code}); check \
             the id and revision, or set HF_TOKEN to a token that may read it (nor is there a \
             local file or folder of that name)"
        )),
        _ => Failure::Unreachable(format!("HTTP {code}")),
    };
    match err {
        ApiError::RequestError(e) => match *e {
            ureq::Error::Status(code, _) => status(code),
            ureq::Error::Transport(t) => Failure::Unreachable(t.to_string()),
        },
        ApiError::TooManyRetries(e) => classify(id, *e),
        other => Failure::Refused(anyhow!("fetching {id}: {other}")),
    }
}

/// The hub cache folder, as `huggingface_hub` finds it: `HF_HUB_CACHE`, else `HF_HOME/hub`,
/// else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(&|k| env(k).map(PathBuf::from))
}

fn cache_dir_from(env: &dyn Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    env("HF_HUB_CACHE")
        .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| hf_home_from(env).map(|h| h.join("hub")))
}

fn hf_home_from(env: &dyn Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    env("HF_HOME")
        .or_else(|| env("XDG_CACHE_HOME").map(|x| x.join("huggingface")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("huggingface")))
}

/// `HF_TOKEN`, else the token file that `hf auth login` writes.
fn token() -> Option<String> {
    if let Some(t) = env("HF_TOKEN") {
        return Some(t);
    }
    let file = env("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| hf_home_from(&|k| env(k).map(PathBuf::from)).map(|h| h.join("token")))?;
    let t = std::fs::read_to_string(file).ok()?;
    Some(t.trim().to_string()).filter(|t| !t.is_empty())
}

fn endpoint() -> Option<String> {
    env("HF_ENDPOINT").map(|e| e.trim_end_matches('/').to_string())
}

/// `huggingface_hub`'s truthy values: 1, true, yes, on.
fn env_flag(key: &str) -> bool {
    env(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_paths() {
        let id = HubId::parse("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(id.repo, "HuggingFaceTB/SmolLM2-135M-Instruct");
        assert_eq!(id.revision(), "main");
        let id = HubId::parse("org/name@refs/pr/1").unwrap();
        assert_eq!((id.repo.as_str(), id.revision()), ("org/name", "refs/pr/1"));
        for path in [
            "./x",
            "/abs/x",
            "x",
            "dir/model.gguf",
            "a/b/c",
            "../x",
            "org/name@",
            "org/name@../x",
            "org/-x",
            "",
        ] {
            assert_eq!(HubId::parse(path), None, "{path}");
        }
    }

    #[test]
    fn the_cache_folder_follows_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        let dir = |pairs| cache_dir_from(&vars(pairs));
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(dir(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h")]), p("/c"));
        assert_eq!(dir(&[("HF_HOME", "/h"), ("HOME", "/u")]), p("/h/hub"));
        assert_eq!(dir(&[("XDG_CACHE_HOME", "/x")]), p("/x/huggingface/hub"));
        assert_eq!(dir(&[("HOME", "/u")]), p("/u/.cache/huggingface/hub"));
        assert_eq!(dir(&[]), None);
    }

    #[test]
    fn wanted_files_put_the_weights_last() {
        let id = HubId::parse("o/n").unwrap();
        let files = [
            "model.safetensors",
            "README.md",
            "tokenizer.json",
            "config.json",
            "chat_template.jinja",
        ];
        assert_eq!(
            wanted_files(&id, &files).unwrap(),
            [
                "config.json",
                "tokenizer.json",
                "chat_template.jinja",
                "model.safetensors"
            ]
        );
        assert_eq!(
            wanted_files(&id, &["m.Q4_0.gguf"]).unwrap(),
            ["m.Q4_0.gguf"]
        );
        let err = wanted_files(&id, &["a.gguf", "b.gguf"]).unwrap_err();
        assert!(err.to_string().contains("a.gguf, b.gguf"), "{err}");
    }
}
