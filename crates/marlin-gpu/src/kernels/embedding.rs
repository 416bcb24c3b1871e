//! Token embeddings (embedding.wgsl): rows of an f32 table gathered by token id.

use bytemuck::{Pod, Zeroable};

use super::view::{apart, need, product, shape_error};
use super::{WG, grid};
use crate::{Gpu, GpuBuffer, GpuError};

pub const SOURCE: &str = include_str!("embedding.wgsl");

/// Mirrors `Params` in embedding.wgsl.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
struct Params {
    tokens: u32,
    hidden: u32,
    vocab: u32,
    first_row: u32,
    part_rows: u32,
    _pad: [u32; 3],
}

impl Gpu {
    /// Records `out[t] = table[ids[t]]`. The table is f32 rows of `hidden` values, in one
    /// buffer or in several parts of whole rows (the vocabulary is their sum), for tables past
    /// the storage-binding limit (Llama 3's 128256 x 4096 f32 is 2.1 GB). Ids must be below
    /// the vocabulary, which the caller checks on the host (it has the ids); an id past it
    /// still reads nothing and gets a row of zeros.
    // ids (tokens) u32, table parts (rows_i, hidden) -> out (tokens, hidden)
    pub fn embedding(
        &self,
        encoder: &mut crate::Recorder,
        ids: &GpuBuffer,
        tokens: usize,
        table: &[&GpuBuffer],
        hidden: usize,
        out: &GpuBuffer,
    ) -> Result<(), GpuError> {
        const OP: &str = "embedding";
        let len = product(OP, "out", tokens, hidden)?;
        need(OP, "ids", ids, tokens as u64)?;
        need(OP, "out", out, len as u64)?;
        let row_bytes = hidden as u64 * 4;
        let mut parts = Vec::with_capacity(table.len());
        let mut vocab = 0u64;
        for (i, part) in table.iter().enumerate() {
            if hidden == 0 || part.len() % row_bytes != 0 {
                return Err(shape_error(
                    OP,
                    format!(
                        "table part {i} is {} bytes, not whole rows of {hidden} f32",
                        part.len()
                    ),
                ));
            }
            let rows = part.len() / row_bytes;
            need(OP, "a table part", part, rows * hidden as u64)?;
            parts.push((*part, vocab, rows));
            vocab += rows;
        }
        if vocab == 0 || vocab > u32::MAX as u64 {
            return Err(shape_error(OP, format!("a table of {vocab} rows")));
        }
        let mut named: Vec<(&str, &GpuBuffer)> = table.iter().map(|b| ("table", *b)).collect();
        named.push(("ids", ids));
        apart(OP, ("out", out), &named)?;
        self.bindable(OP, &named)?;
        self.bindable(OP, &[("ids", ids), ("out", out)])?;
        if len == 0 {
            return Ok(());
        }
        let pipe = self.pipeline(OP, SOURCE);
        for (part, first_row, rows) in parts {
            let params = Params {
                tokens: tokens as u32,
                hidden: hidden as u32,
                vocab: vocab as u32,
                first_row: first_row as u32,
                part_rows: rows as u32,
                _pad: [0; 3],
            };
            let groups = grid(len as u64, WG);
            self.dispatch(encoder, &pipe, &params, &[ids, part, out], groups);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, upload_u32, values};
    use crate::Gpu;

    /// Embedding::forward of crates/marlin-models/src/layers.rs, with zeros past the table.
    fn reference(table: &[f32], hidden: usize, ids: &[u32]) -> Vec<f32> {
        let vocab = table.len() / hidden;
        ids.iter()
            .flat_map(|&id| match (id as usize) < vocab {
                true => table[id as usize * hidden..(id as usize + 1) * hidden].to_vec(),
                false => vec![0.0; hidden],
            })
            .collect()
    }

    fn gather(gpu: &Gpu, parts: &[Vec<f32>], hidden: usize, ids: &[u32]) -> Vec<f32> {
        let bufs: Vec<_> = parts.iter().map(|p| gpu.upload_f32("table", p)).collect();
        let refs: Vec<_> = bufs.iter().collect();
        let idb = upload_u32(gpu, "ids", ids);
        // Filled with NaN so that a value the kernel fails to write shows.
        let out = gpu.upload_f32("out", &vec![f32::NAN; ids.len() * hidden]);
        run(gpu, |enc| {
            gpu.embedding(enc, &idb, ids.len(), &refs, hidden, &out)
                .unwrap()
        });
        gpu.read_f32(&out).unwrap()
    }

    // Copies: exact.
    #[test]
    fn gathers_rows_of_odd_widths() {
        let Some(gpu) = crate::test_gpu() else { return };
        for (vocab, hidden) in [(1usize, 1usize), (3, 67), (67, 3), (5, 4097)] {
            let table = values(hidden as u64, vocab * hidden, 1.0);
            let ids: Vec<u32> = (0..7).map(|i| (i * 5 % vocab) as u32).collect();
            let got = gather(&gpu, std::slice::from_ref(&table), hidden, &ids);
            assert_eq!(
                got,
                reference(&table, hidden, &ids),
                "vocab {vocab}, hidden {hidden}"
            );
        }
    }

    #[test]
    fn ids_past_the_table_read_nothing_and_give_zeros() {
        let Some(gpu) = crate::test_gpu() else { return };
        let (vocab, hidden) = (67, 3);
        let table = values(1, vocab * hidden, 1.0);
        let ids = [0, 66, 67, 1000, u32::MAX, 5];
        let got = gather(&gpu, std::slice::from_ref(&table), hidden, &ids);
        assert_eq!(got, reference(&table, hidden, &ids));
    }

    #[test]
    fn a_table_in_parts_is_one_table() {
        let Some(gpu) = crate::test_gpu() else { return };
        let hidden = 67;
        let table = values(2, 10 * hidden, 1.0);
        let parts = vec![
            table[..3 * hidden].to_vec(),
            table[3 * hidden..4 * hidden].to_vec(),
            table[4 * hidden..].to_vec(),
        ];
        let ids = [9, 0, 3, 2, 4, 10, 7, 3];
        assert_eq!(
            gather(&gpu, &parts, hidden, &ids),
            reference(&table, hidden, &ids)
        );
    }

    #[test]
    fn refuses_bad_shapes() {
        let Some(gpu) = crate::test_gpu() else { return };
        let table = gpu.zeros("table", 4 * 12);
        let ids = upload_u32(&gpu, "ids", &[0, 1]);
        let out = gpu.zeros("out", 4 * 8);
        let mut enc = gpu.encoder();
        // Rows of 5 do not divide 12 values; 3 ids but 2 in the buffer; no table; no room.
        assert!(
            gpu.embedding(&mut enc, &ids, 2, &[&table], 5, &out)
                .is_err()
        );
        assert!(
            gpu.embedding(&mut enc, &ids, 3, &[&table], 2, &out)
                .is_err()
        );
        assert!(gpu.embedding(&mut enc, &ids, 2, &[], 4, &out).is_err());
        assert!(
            gpu.embedding(&mut enc, &ids, 2, &[&table], 6, &out)
                .is_err()
        );
        assert!(
            gpu.embedding(&mut enc, &ids, 2, &[&table], 4, &table)
                .is_err()
        );
        assert!(gpu.embedding(&mut enc, &ids, 2, &[&table], 4, &out).is_ok());
    }
}
