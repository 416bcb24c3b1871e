//! A small GGUF writer for the tests: files with metadata of every type and tensors of every
//! supported type, written as llama.cpp's `gguf-py` writes them (header, key-values, tensor
//! infos, padding to the alignment, tensor data each padded to the alignment).
#![allow(dead_code)]

use half::{bf16, f16};

/// A metadata value as written: GGUF value type ids in [`Val::type_id`].
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Item type id, items (written with their payload only, as GGUF arrays are).
    Arr(u32, Vec<Val>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Val {
    pub fn str(s: &str) -> Val {
        Val::Str(s.to_owned())
    }

    pub fn strs<S: AsRef<str>>(items: &[S]) -> Val {
        Val::Arr(8, items.iter().map(|s| Val::str(s.as_ref())).collect())
    }

    pub fn i32s(items: &[i32]) -> Val {
        Val::Arr(5, items.iter().map(|&i| Val::I32(i)).collect())
    }

    pub fn type_id(&self) -> u32 {
        match self {
            Val::U8(_) => 0,
            Val::I8(_) => 1,
            Val::U16(_) => 2,
            Val::I16(_) => 3,
            Val::U32(_) => 4,
            Val::I32(_) => 5,
            Val::F32(_) => 6,
            Val::Bool(_) => 7,
            Val::Str(_) => 8,
            Val::Arr(..) => 9,
            Val::U64(_) => 10,
            Val::I64(_) => 11,
            Val::F64(_) => 12,
        }
    }

    /// The payload, without the type id.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::U8(v) => out.push(*v),
            Val::I8(v) => out.extend(v.to_le_bytes()),
            Val::U16(v) => out.extend(v.to_le_bytes()),
            Val::I16(v) => out.extend(v.to_le_bytes()),
            Val::U32(v) => out.extend(v.to_le_bytes()),
            Val::I32(v) => out.extend(v.to_le_bytes()),
            Val::F32(v) => out.extend(v.to_le_bytes()),
            Val::Bool(v) => out.push(u8::from(*v)),
            Val::Str(s) => write_str(out, s),
            Val::Arr(t, items) => {
                out.extend(t.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
            Val::U64(v) => out.extend(v.to_le_bytes()),
            Val::I64(v) => out.extend(v.to_le_bytes()),
            Val::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// ggml type ids.
pub mod ty {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q2_K: u32 = 10;
    pub const Q3_K: u32 = 11;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const IQ4_NL: u32 = 20;
    pub const F64: u32 = 28;
    pub const BF16: u32 = 30;
}

/// (values per block, bytes per block) of the types above.
pub fn block(t: u32) -> (usize, usize) {
    match t {
        ty::F32 => (1, 4),
        ty::F16 | ty::BF16 => (1, 2),
        ty::F64 => (1, 8),
        ty::Q4_0 | ty::IQ4_NL => (32, 18),
        ty::Q4_1 => (32, 20),
        ty::Q5_0 => (32, 22),
        ty::Q5_1 => (32, 24),
        ty::Q8_0 => (32, 34),
        ty::Q2_K => (256, 84),
        ty::Q3_K => (256, 110),
        ty::Q4_K => (256, 144),
        ty::Q5_K => (256, 176),
        ty::Q6_K => (256, 210),
        _ => panic!("test writer: no block size for type {t}"),
    }
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    /// GGUF order: dims[0] innermost.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// Where the parts of a built file are.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Byte offset of each key-value's key length.
    pub kv_offsets: Vec<usize>,
    /// Byte offset of each tensor info's name length.
    pub info_offsets: Vec<usize>,
    pub data_offset: usize,
}

#[derive(Debug, Clone)]
pub struct Writer {
    pub version: u32,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<Tensor>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer {
            version: 3,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl Writer {
    pub fn kv(mut self, key: &str, v: Val) -> Self {
        self.kv.push((key.to_owned(), v));
        self
    }

    /// A tensor from raw bytes, checked against its type's block size.
    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        let (len, bytes) = block(ggml_type);
        let n: u64 = dims.iter().product();
        assert_eq!(
            data.len(),
            n as usize / len * bytes,
            "test writer: {name} data size"
        );
        self.tensors.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    pub fn f32_tensor(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, ty::F32, data)
    }

    fn alignment(&self) -> usize {
        self.kv
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .map_or(32, |(_, v)| match v {
                Val::U32(a) => *a as usize,
                _ => 32,
            })
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let align = self.alignment();
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        let mut layout = Layout::default();
        for (k, v) in &self.kv {
            layout.kv_offsets.push(out.len());
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            layout.info_offsets.push(out.len());
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            offset += t.data.len().div_ceil(align) * align;
        }
        if !self.tensors.is_empty() {
            out.resize(out.len().div_ceil(align) * align, 0);
        }
        layout.data_offset = out.len();
        for (t, &o) in self.tensors.iter().zip(&offsets) {
            out.resize(layout.data_offset + o, 0);
            out.extend(&t.data);
        }
        (out, layout)
    }
}

/// A deterministic generator for test data (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// A finite f16 of moderate size (as real scales are), little-endian.
    pub fn f16_bytes(&mut self) -> [u8; 2] {
        f16::from_f32(self.unit() * 0.1).to_le_bytes()
    }
}

/// Random blocks of a quantized type: random codes, finite random f16 scales (a random scale
/// byte pattern could be NaN or infinite, which tests comparing values cannot use).
pub fn random_blocks(t: u32, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let (_, bytes) = block(t);
    let mut out = Vec::with_capacity(n_blocks * bytes);
    for _ in 0..n_blocks {
        let mut b = rng.bytes(bytes);
        // Byte offsets of the f16 fields of each type's block.
        let halves: &[usize] = match t {
            ty::Q4_0 | ty::Q5_0 | ty::Q8_0 | ty::IQ4_NL => &[0],
            ty::Q4_1 | ty::Q5_1 | ty::Q4_K | ty::Q5_K => &[0, 2],
            ty::Q2_K => &[80, 82],
            ty::Q3_K => &[108],
            ty::Q6_K => &[208],
            _ => &[],
        };
        for &h in halves {
            b[h..h + 2].copy_from_slice(&rng.f16_bytes());
        }
        out.extend(b);
    }
    out
}

pub fn f16s(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect()
}

pub fn bf16s(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// A complete small llama-family file: `arch` keys, a gpt2-style vocabulary, and F32 tensors
/// named as llama.cpp names them. Sizes: vocab 16, hidden 8, 2 heads of 4 (1 kv head),
/// intermediate 12, 2 layers.
pub fn tiny_model(arch: &str, rng: &mut Rng) -> Writer {
    let (vocab, hidden, heads, kv_heads, head_dim, inter, layers) =
        (16u32, 8u32, 2u32, 1u32, 4u32, 12u32, 2u32);
    let mut w = Writer::default()
        .kv("general.architecture", Val::str(arch))
        .kv("general.name", Val::str("tiny"))
        .kv(&format!("{arch}.block_count"), Val::U32(layers))
        .kv(&format!("{arch}.context_length"), Val::U32(256))
        .kv(&format!("{arch}.embedding_length"), Val::U32(hidden))
        .kv(&format!("{arch}.feed_forward_length"), Val::U32(inter))
        .kv(&format!("{arch}.attention.head_count"), Val::U32(heads))
        .kv(
            &format!("{arch}.attention.head_count_kv"),
            Val::U32(kv_heads),
        )
        .kv(
            &format!("{arch}.attention.layer_norm_rms_epsilon"),
            Val::F32(1e-5),
        )
        .kv(&format!("{arch}.rope.freq_base"), Val::F32(10000.0))
        .kv("tokenizer.ggml.model", Val::str("gpt2"))
        .kv("tokenizer.ggml.pre", Val::str("smollm"))
        .kv(
            "tokenizer.ggml.tokens",
            Val::strs(&(0..vocab).map(|i| format!("t{i}")).collect::<Vec<_>>()),
        )
        .kv("tokenizer.ggml.token_type", Val::i32s(&[1; 16]))
        .kv("tokenizer.ggml.merges", Val::strs(&["t 1", "t1 0"]))
        .kv("tokenizer.ggml.bos_token_id", Val::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(2));
    let (h, kv, d) = (
        u64::from(heads * head_dim),
        u64::from(kv_heads * head_dim),
        u64::from(hidden),
    );
    let (v, f) = (u64::from(vocab), u64::from(inter));
    let mut put = |w: Writer, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
        w.f32_tensor(name, dims, &values)
    };
    w = put(w, "token_embd.weight", &[d, v]);
    w = put(w, "output_norm.weight", &[d]);
    for l in 0..layers {
        for (part, dims) in [
            ("attn_norm", vec![d]),
            ("attn_q", vec![d, h]),
            ("attn_k", vec![d, kv]),
            ("attn_v", vec![d, kv]),
            ("attn_output", vec![h, d]),
            ("ffn_norm", vec![d]),
            ("ffn_gate", vec![d, f]),
            ("ffn_up", vec![d, f]),
            ("ffn_down", vec![f, d]),
        ] {
            w = put(w, &format!("blk.{l}.{part}.weight"), &dims);
        }
    }
    w
}
