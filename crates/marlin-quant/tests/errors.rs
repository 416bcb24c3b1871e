//! Bad input gets a typed error whose message names the problem, never a panic.

use std::borrow::Cow;

use marlin_quant::{Format, Group, QuantError, QuantMatrix, Scheme, quantize};
use marlin_testkit::{rng, schemes};
use proptest::prelude::*;

fn parts_of(q: &QuantMatrix<'_>) -> [Vec<u8>; 3] {
    [q.codes().to_vec(), q.scales().to_vec(), q.biases().to_vec()]
}

fn rebuild(q: &QuantMatrix<'_>, parts: [Vec<u8>; 3]) -> Result<QuantMatrix<'static>, QuantError> {
    let [c, s, b] = parts;
    QuantMatrix::from_parts(
        q.scheme(),
        q.rows(),
        q.cols(),
        Cow::Owned(c),
        Cow::Owned(s),
        Cow::Owned(b),
        q.global_scale(),
    )
}

#[test]
fn from_parts_accepts_exact_parts_and_borrows() {
    for scheme in schemes() {
        let q = quantize(&rng::gaussian(1, 3 * 67, 0.02), 3, 67, scheme).unwrap();
        let [c, s, b] = parts_of(&q);
        let borrowed = QuantMatrix::from_parts(
            scheme,
            3,
            67,
            Cow::Borrowed(&c),
            Cow::Borrowed(&s),
            Cow::Borrowed(&b),
            q.global_scale(),
        )
        .unwrap();
        assert_eq!(borrowed.dequantize(), q.dequantize(), "{scheme}");
        assert_eq!(borrowed.into_owned(), q);
    }
}

#[test]
fn from_parts_rejects_every_wrong_length() {
    let names = ["codes", "scales", "biases"];
    for scheme in schemes() {
        let q = quantize(&rng::gaussian(2, 5 * 67, 0.02), 5, 67, scheme).unwrap();
        for (p, name) in names.iter().enumerate() {
            for delta in [-1i64, 1, 7] {
                let mut parts = parts_of(&q);
                let expected = parts[p].len();
                let len = expected as i64 + delta;
                if len < 0 {
                    continue;
                }
                parts[p].resize(len as usize, 0);
                let err = rebuild(&q, parts).expect_err("a wrong length is rejected");
                assert_eq!(
                    err,
                    QuantError::PartLength {
                        part: name,
                        scheme: scheme.to_string(),
                        rows: 5,
                        cols: 67,
                        expected,
                        got: len as usize,
                    }
                );
                let msg = err.to_string();
                assert!(
                    msg.contains(name) && msg.contains(&expected.to_string()),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn from_parts_rejects_empty_shapes_and_bad_global_scales() {
    let scheme = Scheme::of(Format::Nvfp4);
    let make = |rows, cols, g| {
        QuantMatrix::from_parts(
            scheme,
            rows,
            cols,
            Cow::Borrowed(&[]),
            Cow::Borrowed(&[]),
            Cow::Borrowed(&[]),
            g,
        )
    };
    assert_eq!(
        make(0, 32, 1.0),
        Err(QuantError::EmptyShape { rows: 0, cols: 32 })
    );
    assert_eq!(
        make(1, 0, 1.0),
        Err(QuantError::EmptyShape { rows: 1, cols: 0 })
    );
    for g in [0.0, f32::NAN, f32::INFINITY] {
        let err = make(1, 32, g).expect_err("bad global scale");
        assert!(matches!(err, QuantError::GlobalScale(_)), "{err}");
        assert!(err.to_string().contains("global scale"), "{err}");
    }
}

proptest! {
    /// NaN or ±inf anywhere is rejected, naming its row and column.
    #[test]
    fn non_finite_input_is_rejected_with_its_position(
        rows in 1usize..9,
        cols in 1usize..80,
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]),
        scheme in prop::sample::select(schemes()),
    ) {
        let mut w = rng::gaussian(3, rows * cols, 0.02);
        let i = at.index(rows * cols);
        w[i] = bad;
        let err = quantize(&w, rows, cols, scheme).expect_err("non-finite weight");
        let (row, col) = (i / cols, i % cols);
        prop_assert!(
            matches!(err, QuantError::NonFinite { row: r, col: c, .. } if r == row && c == col),
            "{:?}", err
        );
        let msg = err.to_string();
        prop_assert!(msg.contains(&format!("row {row}, column {col}")), "{}", msg);
    }
}

#[test]
fn wrong_input_length_and_empty_shape() {
    let s = Scheme::of(Format::Int4);
    let err = quantize(&[0.0; 10], 3, 4, s).unwrap_err();
    assert_eq!(
        err,
        QuantError::InputLength {
            rows: 3,
            cols: 4,
            expected: 12,
            got: 10
        }
    );
    assert!(err.to_string().contains("expected 12"), "{err}");
    assert_eq!(
        quantize(&[], 0, 4, s),
        Err(QuantError::EmptyShape { rows: 0, cols: 4 })
    );
    assert!(
        quantize(&[], usize::MAX, 2, s).is_err(),
        "rows * cols overflows"
    );
}

#[test]
fn weights_too_large_for_f16_scales_name_the_group() {
    let mut w = vec![0.01f32; 2 * 64];
    w[64 + 40] = 1e9;
    for f in [
        Format::Int4,
        Format::Int4Affine,
        Format::Int8,
        Format::Fp4,
        Format::Int3,
        Format::Int2,
    ] {
        let scheme = Scheme::new(f, Group::Size(32)).unwrap();
        let err = quantize(&w, 2, 64, scheme).expect_err("f16 scale overflows");
        assert_eq!(
            err,
            QuantError::ScaleOverflow {
                row: 1,
                group: 1,
                format: f.name()
            }
        );
        assert!(err.to_string().contains("row 1, group 1"), "{err}");
    }
    // Formats whose scales are not f16 take such weights.
    for f in [Format::Fp8, Format::Mxfp4, Format::Nvfp4] {
        assert!(quantize(&w, 2, 64, Scheme::of(f)).is_ok(), "{f}");
    }
}

#[test]
fn format_names_parse_and_errors_list_the_choices() {
    for (f, name) in Format::ALL.iter().zip(Format::NAMES) {
        assert_eq!(name.parse::<Format>(), Ok(*f));
        assert_eq!(
            name.to_uppercase().parse::<Format>(),
            Ok(*f),
            "case-insensitive"
        );
        assert_eq!(f.to_string(), name);
    }
    let err = "q4_k".parse::<Format>().unwrap_err();
    assert_eq!(err, QuantError::UnknownFormat("q4_k".into()));
    let msg = err.to_string();
    assert!(msg.contains("'q4_k'"), "{msg}");
    for name in Format::NAMES {
        assert!(msg.contains(name), "{msg} should list {name}");
    }
}

#[test]
fn group_text_parses_and_errors_say_what_is_allowed() {
    for g in Group::SIZES {
        assert_eq!(g.to_string().parse::<Group>(), Ok(Group::Size(g)));
    }
    assert_eq!("channel".parse::<Group>(), Ok(Group::PerChannel));
    assert_eq!("per-channel".parse::<Group>(), Ok(Group::PerChannel));
    for bad in ["24", "0", "256", "-32", "g32", ""] {
        let err = bad.parse::<Group>().unwrap_err();
        assert_eq!(err, QuantError::InvalidGroupText(bad.into()));
        assert!(
            err.to_string().contains("16, 32, 64, 128 or 'channel'"),
            "{err}"
        );
    }
}

#[test]
fn unsupported_groups_say_which_to_use() {
    let cases = [
        (Format::Mxfp4, Group::Size(64), "group 32"),
        (Format::Nvfp4, Group::Size(32), "group 16"),
        (Format::Int4, Group::PerChannel, "16, 32, 64 or 128"),
        (Format::Int2, Group::Size(8), "16, 32, 64 or 128"),
    ];
    for (f, g, hint) in cases {
        let err = Scheme::new(f, g).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, QuantError::UnsupportedGroup { .. }), "{msg}");
        assert!(
            msg.contains(f.name()) && msg.contains(hint),
            "{f} {g}: {msg}"
        );
    }
}

/// FP8 allows per-channel scales besides the group sizes, but no other size: `Group::Size(0)`
/// would divide by zero later.
#[test]
fn fp8_rejects_group_sizes_outside_the_list() {
    for g in [0, 8, 48, 256] {
        let err = Scheme::new(Format::Fp8, Group::Size(g)).expect_err("not an allowed size");
        assert!(err.to_string().contains("16, 32, 64 or 128"), "{err}");
    }
}
