//! Tensor files whose sizes lie: `.npy` headers and `.npz` entries that
//! claim more elements, or more uncompressed bytes, than they hold. Each is
//! refused with an error naming the file and entry, and without an
//! allocation of the claimed size (this binary's allocator records the
//! largest request). Also: deflated archives, as `numpy.savez_compressed`
//! writes them, and what the writer does with repeated keys.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Cursor, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{array, ArrayD, IxDyn};
use onnxq::onnx::tensor_proto::DataType;
use onnxq::tensorio::{self, HostTensor, TensorIoError};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// The system allocator, recording the largest single request.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to `System` unchanged; only records sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

/// Every test here handles a few kilobytes; a lying size taken at its word
/// would ask for terabytes.
fn assert_no_large_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 64 << 20, "an allocation of {largest} bytes");
}

/// An `.npy` file with header dict `dict` and `data` after it.
fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    b.extend_from_slice(dict.as_bytes());
    b.extend_from_slice(data);
    b
}

/// A ZIP archive of `files`, every one compressed with `method`.
fn zip_of(files: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in files {
        w.start_file(
            *name,
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Rewrites the uncompressed size the first (only) entry of `zip` declares,
/// in its local header and its central directory record alike.
fn declare_size(zip: &mut [u8], size: u32) {
    let find = |sig: &[u8]| zip.windows(4).position(|w| w == sig).unwrap();
    let local = find(b"PK\x03\x04");
    let central = find(b"PK\x01\x02");
    zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
}

const FOUR_F32: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
/// 10^12 float32 elements: 4 TB of data.
const TERA_F32: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }";

fn four_f32() -> (Vec<u8>, HostTensor) {
    let data: Vec<u8> = [1.0f32, -2.0, 3.5, 0.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    (
        npy(FOUR_F32, &data),
        HostTensor::F32(array![1.0f32, -2.0, 3.5, 0.25].into_dyn()),
    )
}

#[test]
fn npy_header_claiming_1e12_elements_is_refused() {
    let e = tensorio::npy_from_bytes(&npy(TERA_F32, &[0; 16]), "big.npy").unwrap_err();
    assert!(matches!(e, TensorIoError::NotNpy { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("big.npy: "), "{msg}");
    assert!(
        msg.contains("needs 4000000000000 data bytes but the file holds 16"),
        "{msg}"
    );
    assert_no_large_allocation();
}

#[test]
fn shape_whose_product_overflows_is_refused() {
    // 2^32 · 2^32 · 4 bytes does not fit a 64-bit usize.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
    let e = tensorio::npy_from_bytes(&npy(dict, &[]), "wide.npy").unwrap_err();
    assert!(matches!(e, TensorIoError::NotNpy { .. }), "{e}");
    assert!(e.to_string().contains("overflows"), "{e}");
    // A product that wraps to zero is no empty tensor either.
    let dims = [1usize << 32, 1 << 32, 2];
    assert_eq!(
        HostTensor::from_le_bytes(DataType::Float as i32, &dims, &[]),
        None
    );
    assert_no_large_allocation();
}

#[test]
fn stored_npz_entry_claiming_1e12_elements_is_refused() {
    let archive = zip_of(
        &[("big.npy", &npy(TERA_F32, &[0; 16]))],
        CompressionMethod::Stored,
    );
    let e = tensorio::npz_from_bytes(&archive, "x.npz").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("x.npz[big.npy]: "), "{msg}");
    assert!(msg.contains("needs 4000000000000 data bytes"), "{msg}");
    assert_no_large_allocation();
}

#[test]
fn deflated_npz_entry_claiming_1e12_elements_is_refused() {
    // The entry's declared size is its true one; the header inside lies.
    let archive = zip_of(
        &[("big.npy", &npy(TERA_F32, &[0; 16]))],
        CompressionMethod::Deflated,
    );
    let e = tensorio::npz_from_bytes(&archive, "x.npz").unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("x.npz[big.npy]: "), "{msg}");
    assert!(msg.contains("needs 4000000000000 data bytes"), "{msg}");
    assert_no_large_allocation();
}

#[test]
fn zip_bomb_entry_is_refused_before_decompressing() {
    let (file, _) = four_f32();
    let mut archive = zip_of(&[("a.npy", &file)], CompressionMethod::Deflated);
    // Some 50 compressed bytes declaring 4 GB.
    declare_size(&mut archive, 0xFFFF_FFF0);
    let e = tensorio::npz_from_bytes(&archive, "bomb.npz").unwrap_err();
    assert!(matches!(e, TensorIoError::NpzEntrySize { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("bomb.npz: entry 'a.npy' "), "{msg}");
    assert!(msg.contains("declares 4294967280 bytes"), "{msg}");
    assert_no_large_allocation();
}

#[test]
fn deflated_entry_shorter_than_declared_is_refused() {
    // The header says 8 elements; the entry declares the 32 bytes they need
    // but holds 16.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }";
    let file = npy(dict, &[0; 16]);
    let mut archive = zip_of(&[("a.npy", &file)], CompressionMethod::Deflated);
    declare_size(&mut archive, file.len() as u32 + 16);
    let e = tensorio::npz_from_bytes(&archive, "short.npz").unwrap_err();
    assert!(matches!(e, TensorIoError::NpzEntrySize { .. }), "{e}");
    assert!(e.to_string().contains("but ends after"), "{e}");
}

#[test]
fn deflated_npz_is_read_like_a_stored_one() {
    let (a, want_a) = four_f32();
    let b = npy(
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
        &[7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat(),
    );
    let files: [(&str, &[u8]); 2] = [("b.npy", &b), ("a.npy", &a)];
    let stored = tensorio::npz_from_bytes(&zip_of(&files, CompressionMethod::Stored), "s.npz");
    let deflated = tensorio::npz_from_bytes(&zip_of(&files, CompressionMethod::Deflated), "d.npz");
    let want = vec![
        ("a".to_string(), want_a),
        (
            "b".to_string(),
            HostTensor::I64(array![7i64, -1].into_dyn()),
        ),
    ];
    assert_eq!(stored.unwrap(), want);
    assert_eq!(deflated.unwrap(), want);
}

#[test]
fn corrupt_deflated_data_fails_its_checksum() {
    let (file, _) = four_f32();
    let mut archive = zip_of(&[("a.npy", &file)], CompressionMethod::Deflated);
    // Flip a bit of the CRC in both records.
    let find = |z: &[u8], sig: &[u8]| z.windows(4).position(|w| w == sig).unwrap();
    let (local, central) = (find(&archive, b"PK\x03\x04"), find(&archive, b"PK\x01\x02"));
    archive[local + 14] ^= 1;
    archive[central + 16] ^= 1;
    let e = tensorio::npz_from_bytes(&archive, "crc.npz").unwrap_err();
    assert!(e.to_string().starts_with("crc.npz[a.npy]: "), "{e}");
}

#[test]
fn writer_keeps_one_copy_of_a_repeated_key() {
    let t = HostTensor::F32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0, 2.0]).unwrap());
    let u = HostTensor::F32(ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0, 3.0]).unwrap());
    let same = [("y".to_string(), t.clone()), ("y".to_string(), t.clone())];
    let bytes = tensorio::npz_to_bytes(&same).unwrap();
    assert_eq!(
        tensorio::npz_from_bytes(&bytes, "y.npz").unwrap(),
        vec![("y".to_string(), t.clone())]
    );
    let differ = [("y".to_string(), t), ("y".to_string(), u)];
    let e = tensorio::npz_to_bytes(&differ).unwrap_err();
    assert!(matches!(e, TensorIoError::NpzWrite { .. }), "{e}");
}
