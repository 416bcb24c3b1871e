//! 4-bit matrices repacked for the CPU into panels of 16 rows (the Marlin idea on a CPU).
//!
//! In the stored layout a 512-bit register of codes holds 128 weights of one row, so every 128
//! multiply-adds pay for their own convert, scale and accumulate. In a panel, one register of
//! codes holds 4 consecutive weights of each of 16 rows: one `vpdpbusd` with 4 activations
//! broadcast does 64 multiply-adds for 16 rows, and one convert + FMA finishes a 32-weight
//! block of all 16 rows. The float work per multiply-add drops fourfold, scales load as 16
//! per-row lanes, and activations need no reordering; small batches then ride on the weight
//! traffic instead of on arithmetic.
//!
//! Layout, per panel (rows `16p..16p+16`, zero-filled past N) and 32-weight block:
//! - 4-bit codes: 256 bytes as 4 groups of 64; in group `r`, byte `4l + t` holds weight `4r + t`
//!   of row `l` in its low nibble and weight `16 + 4r + t` in its high nibble;
//! - 8-bit codes: 512 bytes as 8 groups of 64; in group `j`, byte `4l + t` is weight `4j + t` of
//!   row `l` in offset binary (the stored two's complement byte with its sign bit flipped, i.e.
//!   plus 128: `vpdpbusd` takes the weights unsigned, the activations' zero point takes the 128
//!   back), so that the kernel loads them as they are.
//!
//! Scales (and biases) per panel and group: the 16 rows' stored values side by side (f16, or
//! E8M0 bytes).

use marlin_quant::layout::unpack_block;
use marlin_quant::{BLOCK, Format, QuantMatrix, ScaleType};

/// Rows per panel: the 16 32-bit lanes of a 512-bit register.
pub const PANEL: usize = 16;
/// Bytes of one panel block of `bits`-bit codes: 16 rows x 32 weights.
pub(crate) const fn panel_block(bits: u32) -> usize {
    PANEL * BLOCK * bits as usize / 8
}

/// A 4-bit matrix in panels (see the module docs).
#[derive(Debug, Clone)]
pub struct Panels {
    format: Format,
    rows: usize,
    cols: usize,
    k_pad: usize,
    group_len: usize,
    codes: Vec<u8>,
    scales: Vec<u8>,
    biases: Vec<u8>,
}

/// One panel, as the kernels read it.
pub(crate) struct PanelView<'a> {
    /// blocks x [`panel_block`] bytes.
    pub codes: &'a [u8],
    /// 4 or 8.
    pub bits: u32,
    /// groups x 16 rows of stored scales (2 bytes each, or 1 for E8M0).
    pub scales: &'a [u8],
    pub e8m0: bool,
    /// Affine formats: groups x 16 f16 biases; empty otherwise.
    pub biases: &'a [u8],
    pub group_len: usize,
    pub lut: [u8; 16],
}

impl Panels {
    /// Whether a matrix can be repacked: 4-bit codes or INT8, f16 or E8M0 scales, groups of 32
    /// or more.
    pub fn supports(w: &QuantMatrix<'_>) -> bool {
        let scale = w.format().scale_type();
        (w.format().bits() == 4 || w.format() == Format::Int8)
            && matches!(scale, ScaleType::F16 | ScaleType::E8M0)
            && w.group_len() >= BLOCK
    }

    /// Repacks `w`, or `None` when [`Panels::supports`] says no.
    pub fn new(w: &QuantMatrix<'_>) -> Option<Self> {
        if !Self::supports(w) {
            return None;
        }
        let (n, k_pad, groups) = (w.rows(), w.padded_cols(), w.groups_per_row());
        let panels = n.div_ceil(PANEL);
        let blocks = k_pad / BLOCK;
        let scale_bytes = w.format().scale_type().bytes();
        let bits = w.format().bits();
        let block_bytes = panel_block(bits);
        let mut codes = vec![0u8; panels * blocks * block_bytes];
        let mut scales = vec![0u8; panels * groups * PANEL * scale_bytes];
        let bias_bytes = if w.format().has_bias() { 2 } else { 0 };
        let mut biases = vec![0u8; panels * groups * PANEL * bias_bytes];
        let mut block = [0u8; BLOCK];
        for row in 0..n {
            let (p, l) = (row / PANEL, row % PANEL);
            let packed = w.row_codes(row);
            for b in 0..blocks {
                let stored = &packed[b * 4 * bits as usize..(b + 1) * 4 * bits as usize];
                let out = &mut codes[(p * blocks + b) * block_bytes..][..block_bytes];
                if bits == 8 {
                    for j in 0..8 {
                        let to = &mut out[64 * j + 4 * l..][..4];
                        for (o, &c) in to.iter_mut().zip(&stored[4 * j..4 * j + 4]) {
                            *o = c ^ 0x80;
                        }
                    }
                    continue;
                }
                unpack_block(4, stored, &mut block);
                for r in 0..4 {
                    for t in 0..4 {
                        out[64 * r + 4 * l + t] = block[4 * r + t] | block[16 + 4 * r + t] << 4;
                    }
                }
            }
            for g in 0..groups {
                let src = (row * groups + g) * scale_bytes;
                let dst = ((p * groups + g) * PANEL + l) * scale_bytes;
                scales[dst..dst + scale_bytes].copy_from_slice(&w.scales()[src..src + scale_bytes]);
                if bias_bytes > 0 {
                    let (src, dst) = (2 * (row * groups + g), 2 * ((p * groups + g) * PANEL + l));
                    biases[dst..dst + 2].copy_from_slice(&w.biases()[src..src + 2]);
                }
            }
        }
        Some(Panels {
            format: w.format(),
            rows: n,
            cols: w.cols(),
            k_pad,
            group_len: w.group_len(),
            codes,
            scales,
            biases,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn padded_cols(&self) -> usize {
        self.k_pad
    }
    pub fn group_len(&self) -> usize {
        self.group_len
    }
    pub fn panels(&self) -> usize {
        self.rows.div_ceil(PANEL)
    }

    pub(crate) fn view(&self, p: usize) -> PanelView<'_> {
        let bits = self.format.bits();
        let blocks = self.k_pad / BLOCK;
        let block_bytes = panel_block(bits);
        let groups = self.k_pad / self.group_len;
        let e8m0 = self.format.scale_type() == ScaleType::E8M0;
        let scale_bytes = groups * PANEL * if e8m0 { 1 } else { 2 };
        let bias_bytes = if self.biases.is_empty() {
            0
        } else {
            groups * PANEL * 2
        };
        PanelView {
            codes: &self.codes[p * blocks * block_bytes..(p + 1) * blocks * block_bytes],
            bits,
            scales: &self.scales[p * scale_bytes..(p + 1) * scale_bytes],
            e8m0,
            biases: &self.biases[p * bias_bytes..(p + 1) * bias_bytes],
            group_len: self.group_len,
            lut: crate::decode::lut4(self.format),
        }
    }
}
