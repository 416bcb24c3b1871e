//! ggml tensor types: the id a GGUF tensor info stores, and how many bytes a block of how many
//! values takes (ggml's `ggml_type_traits` table, `ggml.c`).

use std::fmt;

/// A ggml tensor type. Every type ggml defines is listed, so that the extent of any tensor can
/// be checked against the file; which of them convert to a [`Weight`](crate::Weight) is
/// [`GgmlType::conversion`]'s business.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// Every type, in id order. Ids 4, 5 (the removed Q4_2/Q4_3), 31..=33 and 36..=38 (removed
/// repacked Q4_0 variants) are no longer written by ggml.
const ALL: [GgmlType; 34] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS,
        IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, I8, I16, I32, I64, F64, IQ1_M, BF16,
        TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0,
    ]
};

/// How a tensor of a given type becomes a [`Weight`](crate::Weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Decoded exactly to f32.
    Dense,
    /// Bytes copied into one of our formats without changing any value.
    Lossless,
    /// Dequantized to f32 (no format of ours holds these codes).
    Dequantized,
    /// Not converted.
    Unsupported,
}

impl GgmlType {
    /// The type with this id, if ggml defines it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        ALL.into_iter().find(|t| t.id() == id)
    }

    /// The type named as ggml names it (`Q4_K`, `BF16`), as [`fmt::Display`] writes it.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        ALL.into_iter().find(|t| format!("{t:?}") == name)
    }

    /// `(id, values per block, bytes per block)`, as in ggml's type traits.
    fn traits(self) -> (u32, u64, u64) {
        use GgmlType::*;
        match self {
            F32 => (0, 1, 4),
            F16 => (1, 1, 2),
            Q4_0 => (2, 32, 18),
            Q4_1 => (3, 32, 20),
            Q5_0 => (6, 32, 22),
            Q5_1 => (7, 32, 24),
            Q8_0 => (8, 32, 34),
            Q8_1 => (9, 32, 36),
            Q2_K => (10, 256, 84),
            Q3_K => (11, 256, 110),
            Q4_K => (12, 256, 144),
            Q5_K => (13, 256, 176),
            Q6_K => (14, 256, 210),
            Q8_K => (15, 256, 292),
            IQ2_XXS => (16, 256, 66),
            IQ2_XS => (17, 256, 74),
            IQ3_XXS => (18, 256, 98),
            IQ1_S => (19, 256, 50),
            IQ4_NL => (20, 32, 18),
            IQ3_S => (21, 256, 110),
            IQ2_S => (22, 256, 82),
            IQ4_XS => (23, 256, 136),
            I8 => (24, 1, 1),
            I16 => (25, 1, 2),
            I32 => (26, 1, 4),
            I64 => (27, 1, 8),
            F64 => (28, 1, 8),
            IQ1_M => (29, 256, 56),
            BF16 => (30, 1, 2),
            TQ1_0 => (34, 256, 54),
            TQ2_0 => (35, 256, 66),
            MXFP4 => (39, 32, 17),
            NVFP4 => (40, 64, 36),
            Q1_0 => (41, 128, 18),
        }
    }

    pub fn id(self) -> u32 {
        self.traits().0
    }

    /// Values per block (1 for plain types, 32 to 256 for quantized ones).
    pub fn block_len(self) -> u64 {
        self.traits().1
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.traits().2
    }

    pub fn conversion(self) -> Conversion {
        use GgmlType::*;
        match self {
            F32 | F16 | BF16 | F64 => Conversion::Dense,
            Q4_0 | Q4_1 | Q8_0 => Conversion::Lossless,
            Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Conversion::Dequantized,
            _ => Conversion::Unsupported,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The Debug names are ggml's own (`Q4_K`, `IQ2_XXS`, `BF16`).
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_block_sizes_sane() {
        for (i, &t) in ALL.iter().enumerate() {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(ALL[..i].iter().all(|u| u.id() != t.id()), "{t} twice");
            assert!([1, 32, 64, 128, 256].contains(&t.block_len()));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(1000), None);
        assert_eq!(GgmlType::from_name("Q4_K"), Some(GgmlType::Q4_K));
        assert_eq!(GgmlType::from_name("q4_k"), None);
        assert_eq!(
            (GgmlType::Q6_K.block_len(), GgmlType::Q6_K.block_bytes()),
            (256, 210)
        );
    }
}
