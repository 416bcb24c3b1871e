//! Products run as one fused dispatch on the GPU device: the input's norm or SwiGLU, the
//! residual add, and the int8 grids of the next product's x made in the same kernel (decode:
//! each dispatch saved is a few µs of a step).

use marlin_gpu::{FusedInput, Fusion, Gpu, GpuQuantMatrix};

use super::pass::{GpuPass, Int8SwiGlu};
use super::{GpuAct, GpuDevice, GpuLinear, GpuWeight};
use crate::ModelError;
use crate::device::{Input, project_unfused};

/// A product that runs as one fused dispatch ([`GpuDevice::fusion`]): the activation it reads,
/// the quantized weight and what is fused.
pub(super) struct Fused<'a> {
    pub(super) x: &'a GpuAct,
    pub(super) q: &'a GpuQuantMatrix,
    pub(super) fusion: Fusion<'a>,
}

impl GpuDevice {
    /// [`Device::project`], and with `swiglu_next` (w a stacked gate|up whose output feeds
    /// only that product's SwiGLU input) silu(gate) * up on the int8 grids it takes, where
    /// both products can.
    pub(super) fn project_with(
        &self,
        pass: &mut GpuPass,
        x: Input<'_, Self>,
        w: &GpuLinear,
        swiglu_next: Option<&GpuLinear>,
    ) -> Result<GpuAct, ModelError> {
        let ready = pass.int8_h.take();
        pass.int8_swiglu = None;
        match self.fusion(x, w, false) {
            Some(mut fused) => {
                let (m, precision) = (x.source().tokens, self.precision);
                // h's norm already on int8 grids, from the product that added to h.
                if let (Some(r), Input::RmsNorm(a, norm, eps)) = (&ready, x)
                    && r.h == *a.buf().raw()
                    && r.norm == *norm.raw()
                    && self.gpu.takes_int8_x(m, fused.q, precision)
                {
                    fused.fusion.input = FusedInput::NormedInt8 {
                        xq: r.grids.buf(),
                        eps,
                    };
                }
                // silu(gate) * up on the grids the down product takes.
                let grids = match swiglu_next.map(|n| &n.weight) {
                    Some(GpuWeight::Quant(nq))
                        if self.chain
                            && w.bias.is_none()
                            && nq.cols() * 2 == w.out_features
                            && self.gpu.emits_swiglu_int8_x(m, fused.q, precision)
                            && self.gpu.takes_int8_x(m, nq, precision) =>
                    {
                        Some(self.words(Gpu::int8_x_bytes(m, nq.cols()) / 4))
                    }
                    _ => None,
                };
                fused.fusion.then_swiglu = grids.as_ref().map(GpuAct::buf);
                let y = self.act(m, w.out_features);
                self.record_fused(pass, fused, w, &y)?;
                if let Some(grids) = grids {
                    let gate_up = y.buf().raw().clone();
                    pass.int8_swiglu = Some(Int8SwiGlu { gate_up, grids });
                }
                Ok(y)
            }
            None => project_unfused(self, pass, x, w),
        }
    }

    /// x of the product `fused` already on int8 grids, where x is the SwiGLU of the gate|up
    /// whose product left them (`project_before_swiglu`) and this product takes them.
    pub(super) fn swiglu_ready<'a>(
        &self,
        x: Input<'_, Self>,
        swiglu: &'a Option<Int8SwiGlu>,
        fused: &Fused<'_>,
    ) -> Option<FusedInput<'a>> {
        match (x, swiglu) {
            (Input::SwiGlu(a, _), Some(s))
                if s.gate_up == *a.buf().raw()
                    && self.gpu.takes_int8_x(a.tokens, fused.q, self.precision) =>
            {
                Some(FusedInput::Int8 { xq: s.grids.buf() })
            }
            _ => None,
        }
    }

    /// How `f(x) W^T` (added to y where `add_to_y`) runs as one dispatch, where it can: the
    /// weight quantized and x few enough rows for the small-batch kernel, which fuses the
    /// input's norm or SwiGLU and the add (on the H100 each dispatch saved is ~5 µs of a decode
    /// step). None where it cannot.
    pub(super) fn fusion<'a>(
        &self,
        x: Input<'a, Self>,
        w: &'a GpuLinear,
        add_to_y: bool,
    ) -> Option<Fused<'a>> {
        let GpuWeight::Quant(q) = &w.weight else {
            return None;
        };
        let (x, input) = match x {
            Input::Plain(a) => (a, FusedInput::Plain),
            Input::RmsNorm(a, weight, eps) => (a, FusedInput::RmsNorm { weight, eps }),
            Input::SwiGlu(a, _) => (a, FusedInput::SwiGlu),
        };
        // A bias after an add would round differently from the CPU's h + (x W^T + b).
        let fits = self.gpu.fuses_quant_matmul(x.tokens, q, self.precision);
        (fits && !(add_to_y && w.bias.is_some())).then_some(Fused {
            x,
            q,
            fusion: Fusion {
                input,
                add_to_y,
                then_quantize: None,
                then_swiglu: None,
            },
        })
    }

    /// Records a product [`GpuDevice::fusion`] chose into y, then its bias.
    pub(super) fn record_fused(
        &self,
        pass: &mut GpuPass,
        Fused { x, q, fusion }: Fused<'_>,
        w: &GpuLinear,
        y: &GpuAct,
    ) -> Result<(), ModelError> {
        let enc = &mut pass.encoder;
        let (m, precision) = (x.tokens, self.precision);
        self.gpu
            .record_quant_matmul_fused(enc, x.buf(), m, q, y.buf(), precision, fusion)?;
        if let Some(b) = &w.bias {
            self.gpu.add_bias(enc, y.buf(), m, w.out_features, b)?;
        }
        Ok(())
    }
}
