//! The GGUF reader: metadata of every type, arrays (nested too), alignment, tensor infos,
//! versions, and the errors of files that are not GGUF v2/v3.

mod gguf_writer;

use gguf_writer::{Val, Writer, ty};
use marlin_models::ModelError;
use marlin_models::gguf::{GgmlType, GgufFile, MetadataArray, MetadataValue, ValueType};

fn open(w: &Writer) -> Result<GgufFile, ModelError> {
    GgufFile::from_bytes("test.gguf", w.build())
}

fn every_type() -> Writer {
    Writer::default()
        .kv("u8", Val::U8(200))
        .kv("i8", Val::I8(-100))
        .kv("u16", Val::U16(60000))
        .kv("i16", Val::I16(-30000))
        .kv("u32", Val::U32(4_000_000_000))
        .kv("i32", Val::I32(-2_000_000_000))
        .kv("f32", Val::F32(1.5))
        .kv("bool", Val::Bool(true))
        .kv("string", Val::str("héllo"))
        .kv("u64", Val::U64(u64::MAX))
        .kv("i64", Val::I64(i64::MIN))
        .kv("f64", Val::F64(-2.25))
        .kv("empty", Val::str(""))
        .kv("arr.u8", Val::Arr(0, vec![Val::U8(1), Val::U8(2)]))
        .kv("arr.i8", Val::Arr(1, vec![Val::I8(-1)]))
        .kv("arr.u16", Val::Arr(2, vec![Val::U16(7)]))
        .kv("arr.i16", Val::Arr(3, vec![Val::I16(-7)]))
        .kv("arr.u32", Val::Arr(4, vec![Val::U32(9), Val::U32(10)]))
        .kv("arr.i32", Val::i32s(&[1, -2, 3]))
        .kv("arr.f32", Val::Arr(6, vec![Val::F32(0.5), Val::F32(-0.25)]))
        .kv(
            "arr.bool",
            Val::Arr(7, vec![Val::Bool(false), Val::Bool(true)]),
        )
        .kv("arr.string", Val::strs(&["a", "", "ccc"]))
        .kv("arr.u64", Val::Arr(10, vec![Val::U64(1 << 40)]))
        .kv("arr.i64", Val::Arr(11, vec![Val::I64(-(1 << 40))]))
        .kv("arr.f64", Val::Arr(12, vec![Val::F64(1e-300)]))
        .kv("arr.empty", Val::Arr(4, vec![]))
        .kv(
            "arr.nested",
            Val::Arr(
                9,
                vec![
                    Val::i32s(&[1, 2]),
                    Val::strs(&["x"]),
                    Val::Arr(9, vec![Val::Arr(0, vec![Val::U8(5)])]),
                ],
            ),
        )
}

#[test]
fn metadata_of_every_type_round_trips() {
    let f = open(&every_type()).unwrap();
    use MetadataValue as V;
    assert_eq!(f.get("u8"), Some(&V::U8(200)));
    assert_eq!(f.get("i8"), Some(&V::I8(-100)));
    assert_eq!(f.get("u16"), Some(&V::U16(60000)));
    assert_eq!(f.get("i16"), Some(&V::I16(-30000)));
    assert_eq!(f.get("u32"), Some(&V::U32(4_000_000_000)));
    assert_eq!(f.get("i32"), Some(&V::I32(-2_000_000_000)));
    assert_eq!(f.get("f32"), Some(&V::F32(1.5)));
    assert_eq!(f.get("bool"), Some(&V::Bool(true)));
    assert_eq!(f.get("string"), Some(&V::String("héllo".into())));
    assert_eq!(f.get("u64"), Some(&V::U64(u64::MAX)));
    assert_eq!(f.get("i64"), Some(&V::I64(i64::MIN)));
    assert_eq!(f.get("f64"), Some(&V::F64(-2.25)));
    assert_eq!(f.get("empty"), Some(&V::String(String::new())));
    use MetadataArray as A;
    let arr = |k: &str| f.get_array(k).unwrap().unwrap().clone();
    assert_eq!(arr("arr.u8"), A::U8(vec![1, 2]));
    assert_eq!(arr("arr.i8"), A::I8(vec![-1]));
    assert_eq!(arr("arr.u16"), A::U16(vec![7]));
    assert_eq!(arr("arr.i16"), A::I16(vec![-7]));
    assert_eq!(arr("arr.u32"), A::U32(vec![9, 10]));
    assert_eq!(arr("arr.i32"), A::I32(vec![1, -2, 3]));
    assert_eq!(arr("arr.f32"), A::F32(vec![0.5, -0.25]));
    assert_eq!(arr("arr.bool"), A::Bool(vec![false, true]));
    assert_eq!(
        arr("arr.string"),
        A::String(vec!["a".into(), "".into(), "ccc".into()])
    );
    assert_eq!(arr("arr.u64"), A::U64(vec![1 << 40]));
    assert_eq!(arr("arr.i64"), A::I64(vec![-(1 << 40)]));
    assert_eq!(arr("arr.f64"), A::F64(vec![1e-300]));
    assert_eq!(arr("arr.empty"), A::U32(vec![]));
    assert_eq!(arr("arr.empty").item_type(), ValueType::U32);
    assert_eq!(
        arr("arr.nested"),
        A::Array(vec![
            A::I32(vec![1, 2]),
            A::String(vec!["x".into()]),
            A::Array(vec![A::U8(vec![5])]),
        ])
    );
    // File order is kept.
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&keys[..3], ["u8", "i8", "u16"]);
    assert_eq!(keys.len(), every_type().kv.len());
}

#[test]
fn typed_accessors_accept_any_integer_width_and_reject_other_types() {
    let f = open(&every_type()).unwrap();
    assert_eq!(f.get_u64("u8").unwrap(), Some(200));
    assert_eq!(f.get_u64("u32").unwrap(), Some(4_000_000_000));
    assert_eq!(f.get_u64("u64").unwrap(), Some(u64::MAX));
    assert_eq!(f.get_i64("i8").unwrap(), Some(-100));
    assert_eq!(f.get_f32("f64").unwrap(), Some(-2.25));
    assert_eq!(f.get_f32("u16").unwrap(), Some(60000.0));
    assert_eq!(f.get_bool("bool").unwrap(), Some(true));
    assert_eq!(f.get_str("string").unwrap(), Some("héllo"));
    assert_eq!(f.get_u64("absent").unwrap(), None);
    assert_eq!(
        f.get_array("arr.i32").unwrap().unwrap().to_i64s(),
        Some(vec![1, -2, 3])
    );
    assert_eq!(
        f.get_array("arr.u8").unwrap().unwrap().to_f32s(),
        Some(vec![1.0, 2.0])
    );
    for (key, wrong) in [
        ("i8", f.get_u64("i8").err()),
        ("string", f.get_f32("string").err()),
        ("u8", f.get_bool("u8").err()),
        ("bool", f.get_str("bool").err()),
        ("f32", f.get_array("f32").err()),
        ("u64", f.get_i64("u64").err()),
    ] {
        let msg = wrong
            .unwrap_or_else(|| panic!("{key}: accepted"))
            .to_string();
        assert!(msg.contains("test.gguf") && msg.contains(key), "{msg}");
    }
}

#[test]
fn tensor_infos_and_alignment() {
    for alignment in [None, Some(1u32), Some(8), Some(64), Some(4096)] {
        let mut w = Writer::default().kv("general.name", Val::str("t"));
        if let Some(a) = alignment {
            w = w.kv("general.alignment", Val::U32(a));
        }
        let w = w
            .f32_tensor("a", &[3], &[1.0, 2.0, 3.0])
            .tensor("b", &[64, 2], ty::Q8_0, vec![7; 4 * 34])
            .tensor("c", &[2, 3, 4, 5], ty::F16, vec![1; 240]);
        let bytes = w.build();
        let f = GgufFile::from_bytes("t.gguf", bytes.clone()).unwrap();
        let a = alignment.map_or(32, u64::from);
        assert_eq!(f.alignment(), a);
        assert_eq!(f.data_offset() % a, 0);
        let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let b = f.tensor("b").unwrap();
        assert_eq!(
            (b.dims.clone(), b.ggml_type, b.n_bytes),
            (vec![64, 2], GgmlType::Q8_0, 136)
        );
        assert_eq!(b.shape(), vec![2, 64]);
        assert_eq!(b.offset % a, 0);
        assert_eq!(f.tensor("c").unwrap().shape(), vec![5, 4, 3, 2]);
        assert_eq!(f.tensor("c").unwrap().n_elements(), 120);
        assert_eq!(f.tensor_data(b).unwrap(), &[7u8; 136][..]);
        assert_eq!(
            f.tensor_data(f.tensor("a").unwrap()).unwrap(),
            &bytes[f.data_offset() as usize..][..12]
        );
        assert!(f.tensor("d").is_none());
    }
}

#[test]
fn versions_2_and_3_read_alike() {
    for version in [2, 3] {
        let w = Writer {
            version,
            ..every_type()
        }
        .f32_tensor("x", &[2], &[1.0, -1.0]);
        let f = open(&w).unwrap();
        assert_eq!(f.version(), version);
        assert_eq!(f.get_u64("u16").unwrap(), Some(60000));
        assert_eq!(f.tensors().len(), 1);
    }
}

#[test]
fn open_maps_a_file_from_disk() {
    let path = std::env::temp_dir().join(format!("marlin-gguf-open-{}.gguf", std::process::id()));
    std::fs::write(
        &path,
        every_type().f32_tensor("x", &[2], &[1.0, 2.0]).build(),
    )
    .unwrap();
    let f = GgufFile::open(&path);
    let empty = path.with_extension("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&empty);
    let f = f.unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.get_str("string").unwrap(), Some("héllo"));
    assert!(matches!(e, ModelError::Malformed { .. }), "{e}");
    let missing = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(missing, ModelError::Io { .. }), "{missing}");
    assert!(missing.to_string().contains("/nonexistent/model.gguf"));
}

fn err(bytes: Vec<u8>) -> String {
    GgufFile::from_bytes("bad.gguf", bytes)
        .unwrap_err()
        .to_string()
}

#[test]
fn other_magics_and_versions_are_rejected_clearly() {
    let good = Writer::default().kv("k", Val::U8(1)).build();
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"PK\x03\x04");
    let e = err(bad);
    assert!(
        e.contains("bad.gguf") && e.contains("magic") && e.contains("GGUF"),
        "{e}"
    );
    let mut ggjt = good.clone();
    ggjt[..4].copy_from_slice(b"tjgg");
    assert!(err(ggjt).contains("GGJT"));
    for (version, expect) in [
        (1u32, "version 1"),
        (4, "unknown GGUF version 4"),
        (0, "version 0"),
    ] {
        let mut v = good.clone();
        v[4..8].copy_from_slice(&version.to_le_bytes());
        let e = err(v);
        assert!(e.contains(expect), "{e}");
    }
    let mut be = good.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err(be).contains("big-endian"));
    assert!(err(Vec::new()).contains("magic"));
    assert!(err(b"GGUF".to_vec()).contains("version"));
}

#[test]
fn structural_errors_name_the_problem() {
    let dup = Writer::default()
        .kv("k", Val::U8(1))
        .kv("k", Val::U8(2))
        .build();
    assert!(err(dup).contains("'k' appears twice"));
    let dup_t = Writer::default()
        .f32_tensor("t", &[1], &[0.0])
        .f32_tensor("t", &[1], &[0.0])
        .build();
    assert!(err(dup_t).contains("tensor 't' appears twice"));
    // Value type 13 does not exist.
    let mut bad_type = Writer::default().kv("k", Val::U8(1)).build();
    let at = bad_type.len() - 5;
    bad_type[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    let e = err(bad_type);
    assert!(
        e.contains("unknown value type 13") && e.contains("'k'"),
        "{e}"
    );
    // A bool byte other than 0 or 1.
    let mut bad_bool = Writer::default().kv("b", Val::Bool(true)).build();
    *bad_bool.last_mut().unwrap() = 2;
    assert!(err(bad_bool).contains("bool"));
    // Invalid UTF-8 in a string value.
    let mut bad_utf8 = Writer::default().kv("s", Val::str("ab")).build();
    *bad_utf8.last_mut().unwrap() = 0xff;
    assert!(err(bad_utf8).contains("UTF-8"));
    for a in [0u32, 3, 48] {
        let e = err(Writer::default()
            .kv("general.alignment", Val::U32(a))
            .build());
        assert!(e.contains("general.alignment"), "{e}");
    }
    let e = err(Writer::default()
        .kv("general.alignment", Val::str("32"))
        .build());
    assert!(e.contains("general.alignment"), "{e}");
}

#[test]
fn tensor_table_errors_name_the_tensor() {
    let base = || Writer::default().kv("general.name", Val::str("t"));
    // ne[0] not a multiple of the block.
    let mut w = base().tensor("q", &[32, 1], ty::Q4_0, vec![0; 18]);
    w.tensors[0].dims = vec![48, 1];
    let e = err(w.build());
    assert!(e.contains("'q'") && e.contains("multiple"), "{e}");
    // Five dims.
    let mut w = base().f32_tensor("five", &[1], &[0.0]);
    w.tensors[0].dims = vec![1; 5];
    assert!(err(w.build()).contains("at most 4"));
    // Unknown ggml type: Unsupported, naming the id and tensor.
    let mut w = base().f32_tensor("odd", &[1], &[0.0]);
    w.tensors[0].ggml_type = 99;
    let e = GgufFile::from_bytes("t.gguf", w.build()).unwrap_err();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("'odd'") && e.to_string().contains("99"));
    // Data cut short.
    let mut bytes = base().f32_tensor("long", &[64], &[1.0; 64]).build();
    bytes.truncate(bytes.len() - 1);
    let e = err(bytes);
    assert!(e.contains("'long'") && e.contains("past the end"), "{e}");
    // Dims whose product overflows.
    let mut w = base().f32_tensor("huge", &[1], &[0.0]);
    w.tensors[0].dims = vec![u64::MAX / 2, 4];
    assert!(err(w.build()).contains("overflow"));
    // Offset not aligned.
    let (mut bytes, layout) = base().f32_tensor("x", &[1], &[0.0]).build_with_layout();
    // Name length, "x", n_dims, one dim, type, then the offset.
    let offset_at = layout.info_offsets[0] + 8 + 1 + 4 + 8 + 4;
    bytes[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(err(bytes).contains("not a multiple of the alignment"));
}

#[test]
fn a_file_without_tensors_needs_no_data_section() {
    let f = open(&Writer::default().kv("k", Val::U8(1))).unwrap();
    assert!(f.tensors().is_empty());
    assert_eq!(f.alignment(), 32);
}
