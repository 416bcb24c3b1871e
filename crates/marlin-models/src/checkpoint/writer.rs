//! Writing a checkpoint atomically: everything goes into a hidden folder beside OUTPUT
//! (`.NAME.partial`), each file is synced, and only then is the folder renamed to OUTPUT. A run
//! that fails or is killed leaves no OUTPUT; a failure removes the partial folder, a kill leaves
//! it for the next run to remove.
//!
//! The safetensors header comes first in the file, so the writer takes the plan (every weight's
//! name and [`Entry`]) up front, writes the header, then streams each weight's bytes in plan
//! order: one weight is in memory at a time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde_json::{Map, Value};

use super::spec::{DenseType, Entry, METADATA_KEY, describe};
use crate::{ModelError, Weight};

/// The weights file of a checkpoint (one file; the reader also takes sharded folders).
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// A checkpoint being written; [`CheckpointWriter::finish`] makes it appear at OUTPUT.
pub struct CheckpointWriter {
    output: PathBuf,
    partial: PathBuf,
    file: Option<BufWriter<File>>,
    plan: Vec<(String, Entry)>,
    next: usize,
    finished: bool,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_owned(),
        source,
    }
}

impl CheckpointWriter {
    /// Starts a checkpoint at `output`, which must not exist yet, for the weights of `plan` (in
    /// the order they will be written).
    pub fn create(output: &Path, plan: Vec<(String, Entry)>) -> Result<Self, ModelError> {
        if output.exists() {
            return Err(ModelError::Config {
                path: output.to_owned(),
                what: "the output already exists; remove it or choose another -o (a checkpoint \
                       is never written over)"
                    .into(),
            });
        }
        let partial = partial_path(output)?;
        if partial.exists() {
            // Left by a run that was killed: only we write under this name.
            std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
        }
        std::fs::create_dir_all(&partial).map_err(io(&partial))?;
        let mut writer = CheckpointWriter {
            output: output.to_owned(),
            partial,
            file: None,
            plan,
            next: 0,
            finished: false,
        };
        writer.start_weights()?;
        Ok(writer)
    }

    /// The hidden folder the checkpoint is written into before it is renamed.
    pub fn partial_dir(&self) -> &Path {
        &self.partial
    }

    fn start_weights(&mut self) -> Result<(), ModelError> {
        let path = self.partial.join(WEIGHTS_FILE);
        let file = File::create(&path).map_err(io(&path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let header = header(&self.plan);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| out.write_all(&header))
            .map_err(io(&path))?;
        self.file = Some(out);
        Ok(())
    }

    /// Writes the next weight of the plan, which must be `name` and match its entry.
    pub fn write(&mut self, name: &str, weight: &Weight) -> Result<(), ModelError> {
        let path = self.partial.join(WEIGHTS_FILE);
        let Some((planned, entry)) = self.plan.get(self.next) else {
            return Err(plan_error(&path, format!("'{name}' is beyond the plan")));
        };
        if planned != name {
            return Err(plan_error(
                &path,
                format!("'{name}' written where the plan has '{planned}'"),
            ));
        }
        let out = self.file.as_mut().expect("the file is open until finish");
        let w = io(&path);
        match (entry, weight) {
            (Entry::Dense { dtype, shape }, Weight::Dense(t)) if *shape == t.shape => {
                write_dense(out, *dtype, &t.data).map_err(w)?;
            }
            (Entry::Quant { scheme, rows, cols }, Weight::Quant(q))
                if (q.scheme(), q.rows(), q.cols()) == (*scheme, *rows, *cols) =>
            {
                write_packed(out, q).map_err(&w)?;
            }
            (Entry::Sparse { scheme, rows, cols }, Weight::Sparse(s))
                if (s.scheme(), s.rows(), s.cols()) == (*scheme, *rows, *cols) =>
            {
                // In the order of Entry::tensors: the kept values' parts, then the positions.
                write_packed(out, s.kept())
                    .and_then(|()| out.write_all(s.positions()))
                    .map_err(&w)?;
            }
            _ => {
                return Err(plan_error(
                    &path,
                    format!("'{name}' does not match its planned storage {entry:?}"),
                ));
            }
        }
        self.next += 1;
        Ok(())
    }

    /// Writes `config.json` and the `files` (name, bytes) beside the weights, syncs everything
    /// and renames the folder to OUTPUT.
    pub fn finish(mut self, config: &Value, files: &[(String, Vec<u8>)]) -> Result<(), ModelError> {
        let weights = self.partial.join(WEIGHTS_FILE);
        if self.next != self.plan.len() {
            return Err(plan_error(
                &weights,
                format!("{} of {} weights were written", self.next, self.plan.len()),
            ));
        }
        let file = self.file.take().expect("the file is open until finish");
        file.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io(&weights))?;
        let config = serde_json::to_vec_pretty(config).expect("JSON values serialize");
        write_synced(&self.partial.join("config.json"), &config)?;
        for (name, bytes) in files {
            write_synced(&self.partial.join(name), bytes)?;
        }
        sync_dir(&self.partial)?;
        std::fs::rename(&self.partial, &self.output).map_err(io(&self.output))?;
        // A bare name (`-o out`) has the empty path as parent: the working directory.
        match self.output.parent() {
            Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
            Some(p) => sync_dir(p)?,
            None => {}
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    /// A writer dropped before `finish` (an error, a panic) removes what it wrote.
    fn drop(&mut self) {
        if !self.finished {
            self.file = None;
            let _ = std::fs::remove_dir_all(&self.partial);
        }
    }
}

/// `.NAME.partial` beside `output`: the same file system, so the rename is atomic.
fn partial_path(output: &Path) -> Result<PathBuf, ModelError> {
    let name = output.file_name().ok_or_else(|| ModelError::Config {
        path: output.to_owned(),
        what: "the output must name a folder to create (not '..' or '/')".into(),
    })?;
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".partial");
    Ok(output.with_file_name(hidden))
}

fn plan_error(path: &Path, what: String) -> ModelError {
    ModelError::Config {
        path: path.to_owned(),
        what: format!("checkpoint writer: {what} (a bug in the caller)"),
    }
}

/// The safetensors header: every part of every weight in plan order, back to back, and the
/// quantized matrices' descriptions; padded with spaces to a multiple of 8 bytes so the data
/// section starts aligned (as the reference writer does).
fn header(plan: &[(String, Entry)]) -> Vec<u8> {
    let mut map = Map::new();
    let mut described = Map::new();
    let mut at = 0usize;
    for (name, entry) in plan {
        for part in entry.tensors(name) {
            let end = at + part.bytes;
            map.insert(
                part.name.clone(),
                serde_json::json!({
                    "dtype": part.dtype,
                    "shape": part.shape,
                    "data_offsets": [at, end],
                }),
            );
            at = end;
        }
        if let Entry::Quant { scheme, rows, cols } = entry {
            described.insert(name.clone(), describe(*scheme, *rows, *cols, false));
        }
        if let Entry::Sparse { scheme, rows, cols } = entry {
            described.insert(name.clone(), describe(*scheme, *rows, *cols, true));
        }
    }
    let described = Value::Object(described).to_string();
    map.insert(
        "__metadata__".into(),
        serde_json::json!({ METADATA_KEY: described, "format": "metal-marlin" }),
    );
    let mut bytes = Value::Object(map).to_string().into_bytes();
    bytes.resize(bytes.len().div_ceil(8) * 8, b' ');
    bytes
}

/// A quantized matrix's stored parts, in the order of `Entry::tensors`: codes, scales, biases,
/// and NVFP4's per-tensor scale.
fn write_packed(out: &mut impl Write, q: &marlin_quant::QuantMatrix<'_>) -> std::io::Result<()> {
    out.write_all(q.codes())?;
    out.write_all(q.scales())?;
    out.write_all(q.biases())?;
    if q.scheme().format() == marlin_quant::Format::Nvfp4 {
        out.write_all(&q.global_scale().to_le_bytes())?;
    }
    Ok(())
}

fn write_dense(out: &mut impl Write, dtype: DenseType, data: &[f32]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(data.len().min(1 << 16) * dtype.bytes());
    for chunk in data.chunks(1 << 16) {
        buf.clear();
        for &v in chunk {
            match dtype {
                DenseType::F32 => buf.extend_from_slice(&v.to_le_bytes()),
                DenseType::F16 => buf.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
                DenseType::BF16 => buf.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
            }
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// Makes a folder's entries (new files, a rename) durable; a no-op where folders cannot be
/// opened for syncing (Windows).
fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
