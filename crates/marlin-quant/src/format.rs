use std::fmt;
use std::str::FromStr;

use crate::QuantError;

/// A weight format: how one code is turned into a number, and how wide a code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// FP4 E2M1 codes with f16 group scales: `s * e2m1(q)`.
    Fp4,
    /// OCP MXFP4: E2M1 codes, E8M0 power-of-two scale, group 32: `2^(e-127) * e2m1(q)`.
    Mxfp4,
    /// NVFP4: E2M1 codes, E4M3 scale per group of 16, one f32 scale per tensor:
    /// `g * e4m3(s) * e2m1(q)`.
    Nvfp4,
    /// INT4 symmetric, GGUF Q4_0-compatible: `s * (q - 8)`, q in 0..=15.
    Int4,
    /// INT4 affine, GGUF Q4_1- and MLX-compatible: `s * q + b`, q in 0..=15.
    Int4Affine,
    /// INT8 symmetric, GGUF Q8_0-compatible: `s * q`, q in -127..=127.
    Int8,
    /// FP8 E4M3 codes with f32 scales per group or per output channel: `s * e4m3(q)`.
    Fp8,
    /// INT3 affine: `s * q + b`, q in 0..=7.
    Int3,
    /// INT2 affine: `s * q + b`, q in 0..=3.
    Int2,
}

/// How a group scale is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleType {
    F16,
    F32,
    /// 8-bit power of two (OCP MX): `2^(e - 127)`.
    E8M0,
    /// FP8 E4M3 (NVFP4 block scales).
    E4M3,
}

impl ScaleType {
    pub const fn bytes(self) -> usize {
        match self {
            ScaleType::F16 => 2,
            ScaleType::F32 => 4,
            ScaleType::E8M0 | ScaleType::E4M3 => 1,
        }
    }
}

impl Format {
    pub const ALL: [Format; 9] = [
        Format::Fp4,
        Format::Mxfp4,
        Format::Nvfp4,
        Format::Int4,
        Format::Int4Affine,
        Format::Int8,
        Format::Fp8,
        Format::Int3,
        Format::Int2,
    ];
    pub const NAMES: [&'static str; 9] = [
        "fp4",
        "mxfp4",
        "nvfp4",
        "int4",
        "int4-affine",
        "int8",
        "fp8",
        "int3",
        "int2",
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL
            .iter()
            .position(|f| *f == self)
            .expect("ALL lists every format")]
    }

    /// Bits per weight code.
    pub const fn bits(self) -> u32 {
        match self {
            Format::Fp4 | Format::Mxfp4 | Format::Nvfp4 | Format::Int4 | Format::Int4Affine => 4,
            Format::Int8 | Format::Fp8 => 8,
            Format::Int3 => 3,
            Format::Int2 => 2,
        }
    }

    pub const fn scale_type(self) -> ScaleType {
        match self {
            Format::Mxfp4 => ScaleType::E8M0,
            Format::Nvfp4 => ScaleType::E4M3,
            Format::Fp8 => ScaleType::F32,
            _ => ScaleType::F16,
        }
    }

    /// Whether each group also stores an f16 bias (`s * q + b`).
    pub const fn has_bias(self) -> bool {
        matches!(self, Format::Int4Affine | Format::Int3 | Format::Int2)
    }

    /// The group this format uses when the user names none.
    pub const fn default_group(self) -> Group {
        match self {
            Format::Nvfp4 => Group::Size(16),
            Format::Fp8 => Group::PerChannel,
            _ => Group::Size(32),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self, QuantError> {
        let lower = s.to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == lower)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| QuantError::UnknownFormat(s.to_string()))
    }
}

/// How many weights along K share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// 16, 32, 64 or 128 consecutive weights of a row.
    Size(u32),
    /// One scale per row (output channel).
    PerChannel,
}

impl Group {
    pub const SIZES: [u32; 4] = [16, 32, 64, 128];
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Size(g) => write!(f, "group {g}"),
            Group::PerChannel => f.write_str("per-channel scales"),
        }
    }
}

impl FromStr for Group {
    type Err = QuantError;
    fn from_str(s: &str) -> Result<Self, QuantError> {
        match s {
            "channel" | "per-channel" => Ok(Group::PerChannel),
            _ => match s.parse::<u32>() {
                Ok(g) if Group::SIZES.contains(&g) => Ok(Group::Size(g)),
                _ => Err(QuantError::InvalidGroupText(s.to_string())),
            },
        }
    }
}

/// A format together with its group size: everything needed to interpret the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheme {
    format: Format,
    group: Group,
}

impl Scheme {
    /// Checks that the format allows this group (MXFP4 fixes 32, NVFP4 fixes 16, only FP8 has
    /// per-channel scales).
    pub fn new(format: Format, group: Group) -> Result<Self, QuantError> {
        let bad = |hint| QuantError::UnsupportedGroup {
            format: format.name(),
            group: group.to_string(),
            hint,
        };
        match (format, group) {
            (Format::Mxfp4, g) if g != Group::Size(32) => Err(bad("group 32 (fixed by OCP MX)")),
            (Format::Nvfp4, g) if g != Group::Size(16) => Err(bad("group 16 (fixed by NVFP4)")),
            (_, Group::Size(g)) if !Group::SIZES.contains(&g) => {
                Err(bad("a group size of 16, 32, 64 or 128"))
            }
            (Format::Fp8, _) => Ok(Scheme { format, group }),
            (_, Group::PerChannel) => Err(bad("a group size of 16, 32, 64 or 128")),
            _ => Ok(Scheme { format, group }),
        }
    }

    /// The format with its default group.
    pub fn of(format: Format) -> Self {
        Scheme {
            format,
            group: format.default_group(),
        }
    }

    pub fn format(self) -> Format {
        self.format
    }

    pub fn group(self) -> Group {
        self.group
    }

    /// Row length after padding K: a whole number of blocks and of groups.
    pub fn padded_cols(self, cols: usize) -> usize {
        let unit = match self.group {
            Group::Size(g) => (g as usize).max(crate::BLOCK),
            Group::PerChannel => crate::BLOCK,
        };
        cols.div_ceil(unit) * unit
    }

    /// Weights per scale for a row of `cols` weights.
    pub fn group_len(self, cols: usize) -> usize {
        match self.group {
            Group::Size(g) => g as usize,
            Group::PerChannel => self.padded_cols(cols),
        }
    }

    pub fn groups_per_row(self, cols: usize) -> usize {
        self.padded_cols(cols) / self.group_len(cols)
    }

    /// Packed code bytes of one row.
    pub fn row_code_bytes(self, cols: usize) -> usize {
        self.padded_cols(cols) * self.format.bits() as usize / 8
    }

    /// Bytes of the codes, the scales and the biases (affine formats only; f16) of a
    /// `rows x cols` matrix in this scheme.
    pub fn part_bytes(self, rows: usize, cols: usize) -> [usize; 3] {
        let groups = rows * self.groups_per_row(cols);
        let biases = if self.format.has_bias() {
            groups * 2
        } else {
            0
        };
        [
            rows * self.row_code_bytes(cols),
            groups * self.format.scale_type().bytes(),
            biases,
        ]
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.group {
            Group::Size(g) => write!(f, "{} g{g}", self.format),
            Group::PerChannel => write!(f, "{} per-channel", self.format),
        }
    }
}
