//! Where an op finds its operands in a buffer, and the checks every launch makes before it
//! records anything: a bad shape is an error naming the buffer, never a wgpu validation panic
//! or an out-of-bounds access.

use crate::{Gpu, GpuBuffer, GpuError};

/// Each token's part of a buffer of f32 rows: the part of token `t` starts at element
/// `offset + t * stride`. A whole row is `View::rows`; one part of a stacked output (q of
/// `[tokens, q|k|v]`, gate of `[tokens, gate|up]`) is `View::part`, so the ops read and write
/// a fused matmul's output where it lies, with no copy.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub buffer: &'a GpuBuffer,
    /// Elements (f32) before token 0's part.
    pub offset: usize,
    /// Elements (f32) from one token's part to the next.
    pub stride: usize,
}

impl<'a> View<'a> {
    /// Rows of `width` values one after another: `(tokens, width)`.
    pub fn rows(buffer: &'a GpuBuffer, width: usize) -> Self {
        View {
            buffer,
            offset: 0,
            stride: width,
        }
    }

    /// Values `offset..offset + width` of each row of `stride` values.
    pub fn part(buffer: &'a GpuBuffer, offset: usize, stride: usize) -> Self {
        View {
            buffer,
            offset,
            stride,
        }
    }

    /// That `tokens` parts of `width` values fit in the buffer, one after another without
    /// overlapping (else two threads would write one value), and that every index fits in a
    /// u32 (WGSL's index type). Returns (offset, stride) as the kernels take them.
    pub(crate) fn check(
        &self,
        op: &'static str,
        name: &str,
        tokens: usize,
        width: usize,
    ) -> Result<(u32, u32), GpuError> {
        if tokens > 1 && width > self.stride {
            return Err(shape_error(
                op,
                format!(
                    "{name}: parts of {width} values overlap with a stride of {}",
                    self.stride
                ),
            ));
        }
        let end = (tokens.max(1) as u64 - 1)
            .checked_mul(self.stride as u64)
            .and_then(|v| v.checked_add(self.offset as u64))
            .and_then(|v| v.checked_add(width as u64))
            .ok_or_else(|| shape_error(op, format!("{name}: the view's end overflows")))?;
        need(op, name, self.buffer, end)?;
        Ok((self.offset as u32, self.stride as u32))
    }

    /// Same buffer, same place: the in-place case the kernels allow.
    pub(crate) fn same_as(&self, other: &View<'_>) -> bool {
        self.buffer.buffer == other.buffer.buffer
            && self.offset == other.offset
            && self.stride == other.stride
    }

    /// Whether the two views use one buffer.
    pub(crate) fn aliases(&self, other: &View<'_>) -> bool {
        self.buffer.buffer == other.buffer.buffer
    }
}

/// Rows of heads: `tokens` tokens of `heads` vectors of `head_dim` values each. A plain
/// `(tokens, hidden)` activation is `heads: 1, head_dim: hidden`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Values of one token.
    pub fn width(&self) -> Option<usize> {
        self.heads.checked_mul(self.head_dim)
    }

    /// `tokens * heads` rows, or an error when that, or a token's width, is not a u32.
    pub(crate) fn rows(&self, op: &'static str) -> Result<u32, GpuError> {
        let rows = self.tokens.checked_mul(self.heads);
        match (rows, self.width()) {
            (Some(r), Some(w)) if r <= u32::MAX as usize && w <= u32::MAX as usize => Ok(r as u32),
            _ => Err(shape_error(op, format!("{self:?} is too large"))),
        }
    }
}

pub(crate) fn shape_error(op: &'static str, what: String) -> GpuError {
    GpuError::Shape { op, what }
}

/// That `buf` holds at least `words` 32-bit values, and that they are indexable by a u32.
pub(crate) fn need(
    op: &'static str,
    name: &str,
    buf: &GpuBuffer,
    words: u64,
) -> Result<(), GpuError> {
    if words > u32::MAX as u64 {
        return Err(shape_error(
            op,
            format!("{name} needs {words} values, past the u32 indices of WGSL"),
        ));
    }
    if buf.len() < words * 4 {
        return Err(shape_error(
            op,
            format!("{name} needs {} bytes, has {}", words * 4, buf.len()),
        ));
    }
    Ok(())
}

/// That the buffer an op writes is none of those it only reads: wgpu refuses one buffer bound
/// both read-write and read-only in a dispatch (a validation panic), and the kernels assume
/// no such aliasing.
pub(crate) fn apart(
    op: &'static str,
    written: (&str, &GpuBuffer),
    read: &[(&str, &GpuBuffer)],
) -> Result<(), GpuError> {
    match read.iter().find(|(_, b)| b.buffer == written.1.buffer) {
        Some((name, _)) => Err(shape_error(
            op,
            format!(
                "{} and {name} are one buffer; the output needs its own",
                written.0
            ),
        )),
        None => Ok(()),
    }
}

/// `a * b` as a u32 index count, or an error naming the product.
pub(crate) fn product(op: &'static str, what: &str, a: usize, b: usize) -> Result<u32, GpuError> {
    a.checked_mul(b)
        .filter(|&p| p <= u32::MAX as usize)
        .map(|p| p as u32)
        .ok_or_else(|| shape_error(op, format!("{what} ({a} x {b}) is past u32 indexing")))
}

impl Gpu {
    /// That every buffer fits in one storage binding of this device; a larger one would fail
    /// wgpu's validation (a panic) when bound. DESIGN.md: large tensors must be split.
    pub(crate) fn bindable(
        &self,
        op: &'static str,
        buffers: &[(&str, &GpuBuffer)],
    ) -> Result<(), GpuError> {
        let max = self.capabilities().max_storage_binding;
        match buffers.iter().find(|(_, b)| b.buffer.size() > max) {
            Some((name, b)) => Err(shape_error(
                op,
                format!(
                    "{name} is {} bytes, past this device's storage-binding limit of {max}; \
                     split it",
                    b.buffer.size()
                ),
            )),
            None => Ok(()),
        }
    }
}
