//! A weight file's bytes: memory-mapped, or held in memory (tests, fuzzing).

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::ModelError;

pub(crate) enum Bytes {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Bytes, ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process. Another process truncating
        // or rewriting the file while it is mapped would change what we read (or fault on
        // access): like every mmap-based loader (llama.cpp, safetensors), we accept this; every
        // header is parsed and every extent checked against the size mapped here.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(Bytes::Mmap(map))
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(b) => b,
        }
    }
}
