//! Objects planted in a `file://` store that never end or lie about their size: a link to
//! `/dev/zero` and a sparse terabyte under an object's key. Copying one out (fetch, sync,
//! pull) or verifying it must fail as a hash mismatch after reading at most one byte more
//! than the manifest's size, not copy until the disk is full.

use std::fs;
use std::path::Path;

use snapdir_core::manifest::parse_hex;
use snapdir_core::store::{
    get_object_sized, object_path, put_objects, verify_objects, LocalOptions, Origin, Problem,
    PutItem,
};
use snapdir_core::Code;

const X: &str = "3fd1fbbbe0ea4ec3a4e5d0b7c6b7d8f4a4c4a2f4d8a6b3f1e2c5d7a9b1c3e5f7";

fn plant(store: &Path, how: &str) -> [u8; 32] {
    let d = parse_hex(X).unwrap();
    let p = object_path(store, &d);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    match how {
        "dev-zero" => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
        "sparse-tb" => fs::File::create(&p).unwrap().set_len(1 << 40).unwrap(),
        _ => unreachable!(),
    }
    d
}

fn copy_out(how: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    let d = plant(&src, how);
    let item = PutItem {
        checksum: d,
        source: object_path(&src, &d),
        size: 2,
    };
    let err = put_objects(&dst, &[item], Origin::Store, &LocalOptions::default()).unwrap_err();
    assert_eq!(err.code, Code::HashMismatch, "{err}");
    assert!(!object_path(&dst, &d).exists());
}

#[test]
fn store_to_store_copy_of_an_endless_object_stops() {
    copy_out("dev-zero");
}

#[test]
fn store_to_store_copy_of_a_sparse_terabyte_stops() {
    copy_out("sparse-tb");
}

#[test]
fn get_object_refuses_a_sparse_terabyte_without_copying() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plant(tmp.path(), "sparse-tb");
    let dest = tmp.path().join("out");
    let err = get_object_sized(tmp.path(), &d, &dest, Some(2), None).unwrap_err();
    assert_eq!(err.code, Code::HashMismatch, "{err}");
    assert!(!dest.exists() || fs::metadata(&dest).unwrap().len() <= 3);
}

#[test]
fn verify_reports_a_sparse_terabyte_as_corrupt_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = plant(tmp.path(), "sparse-tb");
    let t = std::time::Instant::now();
    let bad = verify_objects(tmp.path(), &[(d, 2)], &LocalOptions::default()).unwrap();
    assert_eq!(bad, vec![(d, Problem::Corrupt)]);
    assert!(t.elapsed().as_secs() < 30, "it read the terabyte");
}
