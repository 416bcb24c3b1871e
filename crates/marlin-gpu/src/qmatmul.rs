//! Quantized weights on the device, and the fused dequantize + matmul that reads them.
//!
//! The device keeps each part of a matrix exactly as `QuantMatrix` stores it (docs/formats.md):
//! codes row by row, scales and biases in their stored types, decoded by the kernels. That
//! layout is already what the kernels want: rows are contiguous along K, which is the direction
//! the threads of qmv split and the direction qmm stages, and a row starts on a 4-byte boundary
//! in every format (a 32-weight block is `4 * bits` bytes). So uploading is a copy, straight from
//! a memory-mapped checkpoint, and the device holds no more bytes than the file.

use marlin_quant::{QuantMatrix, Scheme};

use crate::kernels::qmm::QmmVariant;
use crate::kernels::qmm_coop::QmmCoopVariant;
use crate::kernels::qmv::{self, QmvInput, QmvVariant};
use crate::kernels::quant_decode;
use crate::kernels::quantize_x;
use crate::kernels::view::{apart, need};
use crate::{Gpu, GpuBuffer, GpuError};

const OP: &str = "quant_matmul";

/// A quantized weight matrix `W (rows = N, cols = K)` uploaded once, ready for
/// [`Gpu::quant_matmul`].
///
/// A matrix whose codes, scales or biases exceed the device's largest storage binding is kept as
/// several parts of whole rows; each part is its own set of buffers and its own dispatch.
#[derive(Debug)]
pub struct GpuQuantMatrix {
    scheme: Scheme,
    rows: usize,
    cols: usize,
    global_scale: f32,
    parts: Vec<WeightPart>,
}

#[derive(Debug)]
struct WeightPart {
    first_row: usize,
    rows: usize,
    codes: GpuBuffer,
    scales: GpuBuffer,
    /// A 4-byte placeholder for formats without biases (a binding cannot be empty).
    biases: GpuBuffer,
    /// codes, scales and biases as bind group 1 of qmv and qmm, made once at upload: a call
    /// then makes only its small group 0 (params, x, y).
    bind: wgpu::BindGroup,
}

impl GpuQuantMatrix {
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    /// N, the output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// K, the input features (before padding).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// How many parts the matrix was split into (1 unless it exceeds a storage binding).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
    /// Bytes held on the device.
    pub fn device_bytes(&self) -> u64 {
        let part = |p: &WeightPart| p.codes.len() + p.scales.len() + p.biases.len();
        self.parts.iter().map(part).sum()
    }
}

/// The arithmetic of a quantized product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulPrecision {
    /// f32 throughout: the CPU's f32 answer to rounding (what the tests against transformers
    /// need).
    F32,
    /// Where the device has cooperative matrices, products of more than 8 rows of x
    /// (prefill; `MARLIN_QMV_MAX_M` lowers it) run on them, K split where the tiles alone
    /// would leave the device idle, with x and W rounded to f16 and f32 accumulation, as
    /// llama.cpp and cuBLAS do; elsewhere f32. Decode (m <= 8) takes x as int8x2 (below) where
    /// that measured faster ([`QmvVariant::prefers_q8`]: INT4 and INT4 affine products of more
    /// than 2^24 weights, up to 4 rows), f32 elsewhere.
    #[default]
    Mixed,
    /// [`MatmulPrecision::Mixed`], and decode (m <= 8) of every product of the integer formats
    /// (INT4, INT4 affine, INT8) with x as the CPU's default activations,
    /// `Activations::Int8x2`: each block of 32 on an int8 grid plus an int8 residual (about 14
    /// bits), multiplied by the codes in integer dot products, as llama.cpp does with its int8
    /// activations. x is quantized once per product, by a dispatch of its own (quantize_x.wgsl).
    /// Other formats decode in f32. For tests and benchmarks: on the H100 that dispatch costs
    /// more than the integer products save for small matrices and for INT8 (docs/gpu.md).
    Int8x2,
}

/// What a quantized product does around its multiply, in the same dispatch, where it runs as
/// the small-batch kernel ([`Gpu::fuses_quant_matmul`]): a decode step's layer norm, SwiGLU and
/// residual adds then cost no dispatch of their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fusion<'a> {
    pub input: FusedInput<'a>,
    /// `y += x W^T` (the residual connection) instead of `y = x W^T`.
    pub add_to_y: bool,
    /// With `add_to_y`: y after the add, ready for a next product that multiplies its RMSNorm
    /// ([`FusedInput::NormedInt8`]), so that product needs no quantize_x dispatch. Only where
    /// [`Gpu::emits_int8_x`] holds.
    pub then_quantize: Option<QuantizeNext<'a>>,
    /// W a stacked gate|up (n = 2 ff): silu(gate) * up of y's rows also goes on int8 grids in
    /// this buffer ([`Gpu::int8_x_bytes`] of ff columns), for the next product to take as
    /// [`FusedInput::Int8`] with no quantize_x dispatch. Only where
    /// [`Gpu::emits_swiglu_int8_x`] holds; not with `add_to_y` or `then_quantize`.
    pub then_swiglu: Option<&'a GpuBuffer>,
}

/// Where a product leaves y on int8 grids for the next product ([`Fusion::then_quantize`]).
#[derive(Debug, Clone, Copy)]
pub struct QuantizeNext<'a> {
    /// The next norm's weight (n values): y times it is what goes on the grids.
    pub norm: &'a GpuBuffer,
    /// [`Gpu::int8_x_bytes`] of y's rows and n columns.
    pub target: &'a GpuBuffer,
}

/// What the product multiplies.
#[derive(Debug, Clone, Copy, Default)]
pub enum FusedInput<'a> {
    /// x as given.
    #[default]
    Plain,
    /// `x / sqrt(mean(x^2) + eps) * weight` over each row (`weight` has K values).
    RmsNorm { weight: &'a GpuBuffer, eps: f32 },
    /// `silu(gate) * up` of rows of 2K values: gate the first K, up the next K.
    SwiGlu,
    /// The RMSNorm of x, x times the norm's weight having been put on int8 grids in `xq` by
    /// the product that made x ([`Fusion::then_quantize`]); x itself is not read. Only where
    /// [`Gpu::takes_int8_x`] holds.
    NormedInt8 { xq: &'a GpuBuffer, eps: f32 },
    /// x already on int8 grids in `xq`, made by the product before ([`Fusion::then_swiglu`]);
    /// x itself is not read. Only where [`Gpu::takes_int8_x`] holds.
    Int8 { xq: &'a GpuBuffer },
}

impl FusedInput<'_> {
    fn kind(&self) -> QmvInput {
        match self {
            FusedInput::Plain | FusedInput::NormedInt8 { .. } | FusedInput::Int8 { .. } => {
                QmvInput::Plain
            }
            FusedInput::RmsNorm { .. } => QmvInput::RmsNorm,
            FusedInput::SwiGlu => QmvInput::SwiGlu,
        }
    }
}

/// Which kernel runs a product: chosen from m, or forced by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    Auto(MatmulPrecision),
    Qmv(QmvVariant),
    Qmm(QmmVariant),
    QmmCoop(QmmCoopVariant),
}

impl Gpu {
    /// Uploads `w` once (a copy of its bytes: see the module documentation).
    pub fn upload_quant(&self, w: &QuantMatrix<'_>) -> Result<GpuQuantMatrix, GpuError> {
        self.upload_quant_split(w, self.capabilities().max_storage_binding)
    }

    /// [`Gpu::upload_quant`] with no buffer larger than `max_part_bytes`: tests force small
    /// parts this way; models use [`Gpu::upload_quant`], which splits at the device's limit.
    pub fn upload_quant_split(
        &self,
        w: &QuantMatrix<'_>,
        max_part_bytes: u64,
    ) -> Result<GpuQuantMatrix, GpuError> {
        let (rows, scheme) = (w.rows(), w.scheme());
        let row_bytes = scheme.part_bytes(1, w.cols());
        let widest = *row_bytes.iter().max().expect("three parts") as u64;
        // Buffers are padded to whole 4-byte words, so stay a word below the limit.
        let per_part = (max_part_bytes.saturating_sub(3) / widest) as usize;
        if per_part == 0 {
            return Err(GpuError::Shape {
                op: "upload_quant",
                what: format!(
                    "one row of this {scheme} matrix ({} columns) takes {widest} bytes, more \
                     than the {max_part_bytes} bytes a GPU buffer binding may hold; run this \
                     layer on the CPU (--device cpu)",
                    w.cols()
                ),
            });
        }
        let slice = |bytes: &[u8], per_row: usize, r0: usize, r1: usize| {
            bytes[r0 * per_row..r1 * per_row].to_vec()
        };
        let mut parts = Vec::new();
        for first_row in (0..rows).step_by(per_part) {
            let end = (first_row + per_part).min(rows);
            let [c, s, b] = row_bytes;
            let codes = self.upload("codes", &slice(w.codes(), c, first_row, end));
            let scales = self.upload("scales", &slice(w.scales(), s, first_row, end));
            let biases = self.upload("biases", &slice(w.biases(), b, first_row, end));
            let entries: Vec<_> = [&codes, &scales, &biases]
                .into_iter()
                .zip(0..)
                .map(|(buf, binding)| wgpu::BindGroupEntry {
                    binding,
                    resource: buf.buffer.as_entire_binding(),
                })
                .collect();
            let bind = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("quant weights"),
                layout: &self.quant_layouts().weights,
                entries: &entries,
            });
            parts.push(WeightPart {
                first_row,
                rows: end - first_row,
                codes,
                scales,
                biases,
                bind,
            });
        }
        Ok(GpuQuantMatrix {
            scheme,
            rows,
            cols: w.cols(),
            global_scale: w.global_scale(),
            parts,
        })
    }

    /// `y (m, n) = x (m, k) · W (n, k)^T`, with x and y f32 buffers on the device (row-major,
    /// rows of x of exactly K values). Submits the work; read y when it is needed.
    ///
    /// m up to `qmv::MAX_M` runs the small-batch kernel (qmv.wgsl), larger m the tiled GEMM
    /// (qmm.wgsl).
    // x (m, k), w (n, k) -> y (m, n)
    pub fn quant_matmul(
        &self,
        x: &GpuBuffer,
        m: usize,
        w: &GpuQuantMatrix,
        y: &GpuBuffer,
        precision: MatmulPrecision,
    ) -> Result<(), GpuError> {
        self.quant_matmul_with(x, m, w, y, Plan::Auto(precision))
    }

    /// [`Gpu::quant_matmul`] recorded into `encoder` without submitting: a forward pass (or a
    /// benchmark) records many products and other ops and submits once ([`Gpu::submit`]).
    /// Products recorded one after another run in order, each seeing what the one before
    /// wrote. Shapes are checked before anything is recorded; on an error nothing is.
    pub fn record_quant_matmul(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        m: usize,
        w: &GpuQuantMatrix,
        y: &GpuBuffer,
        precision: MatmulPrecision,
    ) -> Result<(), GpuError> {
        self.record_quant_matmul_with(
            encoder,
            x,
            m,
            w,
            y,
            Plan::Auto(precision),
            Fusion::default(),
        )
    }

    /// Whether a product of `m` rows of x by `w` at `precision` runs as the small-batch kernel,
    /// which can fuse an input norm or SwiGLU and a residual add
    /// ([`Gpu::record_quant_matmul_fused`]).
    pub fn fuses_quant_matmul(
        &self,
        m: usize,
        w: &GpuQuantMatrix,
        precision: MatmulPrecision,
    ) -> bool {
        m > 0 && matches!(self.resolve(Plan::Auto(precision), m, w), Plan::Qmv(_))
    }

    /// Whether a product of `m` rows by `w` takes x on int8 grids
    /// ([`FusedInput::NormedInt8`]).
    pub fn takes_int8_x(&self, m: usize, w: &GpuQuantMatrix, precision: MatmulPrecision) -> bool {
        m > 0
            && w.cols.is_multiple_of(marlin_quant::BLOCK)
            && w.scheme.padded_cols(w.cols) == w.cols
            && matches!(self.resolve(Plan::Auto(precision), m, w), Plan::Qmv(v) if v.x_q8)
    }

    /// Whether a product of `m` rows by `w` that adds to y can leave y on int8 grids for the
    /// next product ([`Fusion::then_quantize`]): W in one part (the kernel numbers y's blocks
    /// from its own rows).
    pub fn emits_int8_x(&self, m: usize, w: &GpuQuantMatrix, precision: MatmulPrecision) -> bool {
        m > 0
            && w.parts.len() == 1
            && matches!(self.resolve(Plan::Auto(precision), m, w), Plan::Qmv(v) if v.emits_q8(w.rows))
    }

    /// Whether a product of `m` rows by a stacked gate|up `w` can put silu(gate) * up on int8
    /// grids for the next product ([`Fusion::then_swiglu`]): W in one part.
    pub fn emits_swiglu_int8_x(
        &self,
        m: usize,
        w: &GpuQuantMatrix,
        precision: MatmulPrecision,
    ) -> bool {
        m > 0
            && w.parts.len() == 1
            && matches!(self.resolve(Plan::Auto(precision), m, w), Plan::Qmv(v) if v.emits_swiglu_q8(w.rows))
    }

    /// Bytes of `m` rows of `k` values on int8 grids ([`QuantizeNext::target`]): quantize_x's
    /// planes and, after them, a sum of squares per block.
    pub fn int8_x_bytes(m: usize, k: usize) -> u64 {
        let blocks = k.div_ceil(marlin_quant::BLOCK) as u64;
        m as u64 * blocks * (quantize_x::BLOCK_BYTES + 4)
    }

    /// [`Gpu::record_quant_matmul`] with `fusion` done in the same dispatch: for
    /// [`FusedInput::SwiGlu`] x holds rows of 2K values. Only where
    /// [`Gpu::fuses_quant_matmul`] holds; an error otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn record_quant_matmul_fused(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        m: usize,
        w: &GpuQuantMatrix,
        y: &GpuBuffer,
        precision: MatmulPrecision,
        fusion: Fusion<'_>,
    ) -> Result<(), GpuError> {
        self.record_quant_matmul_with(encoder, x, m, w, y, Plan::Auto(precision), fusion)
    }

    /// The kernel a product runs on: `plan` itself unless it is `Auto`.
    fn resolve(&self, plan: Plan, m: usize, w: &GpuQuantMatrix) -> Plan {
        let Plan::Auto(precision) = plan else {
            return plan;
        };
        let (n, k) = (w.rows, w.cols);
        let caps = self.capabilities();
        let coop = match precision {
            MatmulPrecision::Mixed | MatmulPrecision::Int8x2 => QmmCoopVariant::new(&caps, m),
            MatmulPrecision::F32 => None,
        };
        let qmv_max = if coop.is_some() {
            qmv::mixed_max_m()
        } else {
            qmv::MAX_M
        };
        match coop {
            _ if m <= qmv_max => Plan::Qmv(QmvVariant {
                x_q8: match precision {
                    MatmulPrecision::Int8x2 => QmvVariant::takes_q8(w.scheme),
                    MatmulPrecision::Mixed => QmvVariant::prefers_q8(w.scheme, m, n, k),
                    MatmulPrecision::F32 => false,
                },
                ..QmvVariant::new(&caps, w.scheme, (m, n, k))
            }),
            Some(v) => Plan::QmmCoop(v.for_k(k).split_for(
                m as u32,
                n as u32,
                (w.scheme.padded_cols(k) / marlin_quant::BLOCK) as u32,
                caps.max_storage_binding,
            )),
            None => Plan::Qmm(QmmVariant::new(m)),
        }
    }

    pub(crate) fn quant_matmul_with(
        &self,
        x: &GpuBuffer,
        m: usize,
        w: &GpuQuantMatrix,
        y: &GpuBuffer,
        plan: Plan,
    ) -> Result<(), GpuError> {
        let mut encoder = self.encoder();
        self.record_quant_matmul_with(&mut encoder, x, m, w, y, plan, Fusion::default())?;
        self.submit(encoder);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_quant_matmul_with(
        &self,
        encoder: &mut crate::Recorder,
        x: &GpuBuffer,
        m: usize,
        w: &GpuQuantMatrix,
        y: &GpuBuffer,
        plan: Plan,
        fusion: Fusion<'_>,
    ) -> Result<(), GpuError> {
        let (n, k) = (w.rows, w.cols);
        let shape_err = |what: String| Err(GpuError::Shape { op: OP, what });
        if m == 0 {
            return shape_err("m must be at least 1".into());
        }
        let caps = self.capabilities();
        let limit = caps.max_storage_binding;
        let x_stride = match fusion.input {
            FusedInput::SwiGlu => 2 * k,
            _ => k,
        };
        for (name, buf, values) in [("x", x, m * x_stride), ("y", y, m * n)] {
            let need = values as u64 * 4;
            if buf.len() < need {
                return shape_err(format!(
                    "{name} holds {} bytes but ({m} rows) x ({k} columns) x ({n} rows of W) \
                     needs {need}",
                    buf.len()
                ));
            }
            if buf.len() > limit {
                return shape_err(format!(
                    "{name} has {} bytes, more than the {limit} bytes a GPU binding may hold; \
                     multiply fewer rows of x at a time",
                    buf.len()
                ));
            }
        }
        let plan = match self.resolve(plan, m, w) {
            Plan::Qmv(v)
                if m > v.mt as usize
                    || (v.x_vec4 && !k.is_multiple_of(4))
                    || (v.x_whole && w.scheme.padded_cols(k) != k) =>
            {
                return shape_err(format!("{v:?} cannot take m = {m}, k = {k}"));
            }
            Plan::Qmv(v)
                if matches!(
                    fusion.input,
                    FusedInput::NormedInt8 { .. } | FusedInput::Int8 { .. }
                ) && !v.x_q8 =>
            {
                return shape_err(format!(
                    "{v:?} does not take x on int8 grids; check Gpu::takes_int8_x first"
                ));
            }
            Plan::Qmv(v)
                if fusion.then_quantize.is_some()
                    && !(fusion.add_to_y && v.emits_q8(n) && w.parts.len() == 1) =>
            {
                return shape_err(format!(
                    "{v:?} cannot leave y on int8 grids (adding: {}); check Gpu::emits_int8_x first",
                    fusion.add_to_y
                ));
            }
            Plan::Qmv(v)
                if fusion.then_swiglu.is_some()
                    && (fusion.add_to_y
                        || fusion.then_quantize.is_some()
                        || !v.emits_swiglu_q8(n)
                        || w.parts.len() != 1) =>
            {
                return shape_err(format!(
                    "{v:?} cannot put SwiGLU on int8 grids; check Gpu::emits_swiglu_int8_x first"
                ));
            }
            Plan::Qmv(v) => Plan::Qmv(QmvVariant {
                // Int8 x comes from quantize_x.wgsl, which does the input's norm or SwiGLU, or
                // from the product before, whose norm is applied at the end.
                input: match v.x_q8 {
                    true => QmvInput::Plain,
                    false => fusion.input.kind(),
                },
                norm_sums: matches!(fusion.input, FusedInput::NormedInt8 { .. }),
                add_to_y: fusion.add_to_y,
                q8_out: fusion.then_quantize.is_some(),
                swiglu_out: fusion.then_swiglu.is_some(),
                ..v
            }),
            _ if fusion.input.kind() != QmvInput::Plain
                || fusion.add_to_y
                || fusion.then_swiglu.is_some()
                || matches!(
                    fusion.input,
                    FusedInput::NormedInt8 { .. } | FusedInput::Int8 { .. }
                ) =>
            {
                return shape_err(format!(
                    "{m} rows of x run on the tiled kernel, which fuses no norm, SwiGLU or \
                     add; check Gpu::fuses_quant_matmul first"
                ));
            }
            other => other,
        };
        apart(OP, ("y", y), &[("x", x)])?;
        let check_eps = |eps: f32| match eps.is_finite() && eps >= 0.0 {
            true => Ok(()),
            false => shape_err(format!("eps {eps} is not a finite value >= 0")),
        };
        let norm = match fusion.input {
            FusedInput::RmsNorm { weight, eps } => {
                need(OP, "norm weight", weight, k as u64)?;
                apart(OP, ("y", y), &[("norm weight", weight)])?;
                check_eps(eps)?;
                self.bindable(OP, &[("norm weight", weight)])?;
                Some((weight, eps))
            }
            _ => None,
        };
        let ready_q8 = match fusion.input {
            FusedInput::NormedInt8 { xq, .. } | FusedInput::Int8 { xq } => {
                need(OP, "x on int8 grids", xq, Self::int8_x_bytes(m, k) / 4)?;
                apart(OP, ("y", y), &[("x on int8 grids", xq)])?;
                self.bindable(OP, &[("x on int8 grids", xq)])?;
                let eps = match fusion.input {
                    FusedInput::NormedInt8 { eps, .. } => {
                        check_eps(eps)?;
                        Some(eps)
                    }
                    _ => None,
                };
                Some((xq, eps))
            }
            _ => None,
        };
        if let Some(grids) = fusion.then_swiglu {
            need(
                OP,
                "SwiGLU's int8 grids",
                grids,
                Self::int8_x_bytes(m, n / 2) / 4,
            )?;
            apart(OP, ("SwiGLU's int8 grids", grids), &[("x", x), ("y", y)])?;
            if let Some((xq, _)) = ready_q8 {
                apart(
                    OP,
                    ("SwiGLU's int8 grids", grids),
                    &[("x on int8 grids", xq)],
                )?;
            }
            self.bindable(OP, &[("SwiGLU's int8 grids", grids)])?;
        }
        if let Some(next) = fusion.then_quantize {
            if norm.is_some() {
                return shape_err("a product cannot both norm x and quantize y".into());
            }
            need(OP, "next norm weight", next.norm, n as u64)?;
            need(
                OP,
                "y's int8 grids",
                next.target,
                Self::int8_x_bytes(m, n) / 4,
            )?;
            apart(
                OP,
                ("y's int8 grids", next.target),
                &[("x", x), ("y", y), ("next norm weight", next.norm)],
            )?;
            if let Some((xq, _)) = ready_q8 {
                apart(
                    OP,
                    ("y's int8 grids", next.target),
                    &[("x on int8 grids", xq)],
                )?;
            }
            self.bindable(
                OP,
                &[
                    ("next norm weight", next.norm),
                    ("y's int8 grids", next.target),
                ],
            )?;
        }
        // Check every part before recording any, so an error records nothing.
        let grid_fits = |part: &WeightPart| match plan {
            Plan::Qmm(v) => v.groups(m as u32, part.rows as u32).is_some(),
            Plan::QmmCoop(v) => v.groups(m as u32, part.rows as u32).is_some(),
            _ => true,
        };
        if let Some(part) = w.parts.iter().find(|p| !grid_fits(p)) {
            return shape_err(format!(
                "{m} rows of x by {} rows of W need more than 65535 workgroups along one side; \
                 multiply fewer rows of x at a time",
                part.rows
            ));
        }
        // A split-K product writes one slab of sums per split to the scratch buffer, then adds
        // them into y.
        let splits = match plan {
            Plan::QmmCoop(v) if v.splits > 1 => v.splits,
            _ => 1,
        };
        let slabs = (splits > 1).then(|| self.scratch((splits as usize * m * n * 4) as u64));
        let target = slabs.as_ref().unwrap_or(y);
        // Int8 x: quantized once, into the scratch buffer (which a split-K product would use
        // instead), for every part to read.
        let blocks = w.scheme.padded_cols(k) / marlin_quant::BLOCK;
        let q8 = match plan {
            Plan::Qmv(v) if v.x_q8 && ready_q8.is_none() => {
                let xq = self.scratch(m as u64 * blocks as u64 * quantize_x::BLOCK_BYTES);
                self.bindable(OP, &[("x on int8 grids", &xq)])?;
                self.record_quantize_x(encoder, x, (m, k, blocks), x_stride, fusion.input, &xq);
                Some(xq)
            }
            _ => None,
        };
        let (x, norm) = match (&q8, ready_q8) {
            (Some(xq), _) => (xq, None),
            (None, Some((xq, eps))) => (xq, eps.map(|eps| (xq, eps))),
            (None, None) => (x, norm),
        };
        // Binding 3: the norm's weight, the next norm's weight, or x again where the kernel
        // reads none; binding 4: y's int8 grids, or y's buffer again.
        let (weight_binding, grids_binding) = match (fusion.then_quantize, fusion.then_swiglu) {
            (Some(next), _) => (next.norm, next.target),
            (None, Some(grids)) => (norm.map_or(x, |(w, _)| w), grids),
            (None, None) => (norm.map_or(x, |(w, _)| w), target),
        };
        let consts = quant_decode::SchemeConsts::of(w.scheme);
        for part in &w.parts {
            let mut params = quant_decode::params(
                w.scheme,
                (m, part.rows, k),
                part.first_row,
                n,
                w.global_scale,
            );
            if let Plan::QmmCoop(v) = plan {
                params.split_blocks = v.split_blocks(params.blocks);
            }
            params.x_stride = x_stride as u32;
            params.eps = norm.map_or(0.0, |(_, eps)| eps);
            let (key, groups) = match plan {
                Plan::Qmv(v) => (v.key(consts), v.groups(params.n)),
                Plan::Qmm(v) => (v.key(consts), v.groups(params.m, params.n)),
                Plan::QmmCoop(v) => (v.key(consts), v.groups(params.m, params.n)),
                Plan::Auto(_) => unreachable!("resolved above"),
            };
            let groups = groups.expect("checked above, before recording anything");
            // The source is assembled only the first time a key is seen.
            let pipe = self.quant_pipeline(&key, || match plan {
                Plan::Qmv(v) => v.source(consts),
                Plan::Qmm(v) => v.source(consts),
                Plan::QmmCoop(v) => v.source(consts),
                Plan::Auto(_) => unreachable!("resolved above"),
            });
            self.dispatch_with(
                encoder,
                &pipe,
                &params,
                &[x, target, weight_binding, grids_binding],
                Some(&part.bind),
                groups,
            );
        }
        if let Some(slabs) = &slabs {
            self.record_split_sum(encoder, y, slabs, m * n, splits);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
