use std::{fs, io::Write as _, time::SystemTime};

use super::*;

/// SHA-256("abc"), FIPS 180-2 appendix B.1.
const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
/// SHA-256("abd").
const ABD: &str = "a52d159f262b2c6ddb724a61840befc36eb30c88877a4030b65cbe86298449c9";

fn hasher(max: u64) -> ExeHasher {
    ExeHasher::new(max, NonZeroUsize::new(16).expect("non-zero"))
}

async fn digest(hasher: &ExeHasher, path: &Path) -> ExeDigest {
    let file = File::open(path).expect("open");
    hasher.digest(file, path).await.expect("digest")
}

fn sha(hex: &str) -> ExeDigest {
    ExeDigest::Sha256(hex.to_owned())
}

#[tokio::test]
async fn hashes_and_caches_by_file_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bin");
    fs::write(&path, b"abc").expect("write");
    let h = hasher(1 << 20);
    assert_eq!(digest(&h, &path).await, sha(ABC));
    assert_eq!(digest(&h, &path).await, sha(ABC));
    assert_eq!(h.computed(), 1, "same file version: cached");

    // Rewritten in place (same inode, new size): a new version.
    fs::write(&path, b"abcabc").expect("rewrite");
    let ExeDigest::Sha256(six) = digest(&h, &path).await else {
        panic!("not hashed")
    };
    assert_ne!(six, ABC);
    assert_eq!(h.computed(), 2);

    // Same size, same mtime, different inode (replaced by rename): a new version.
    let mtime: SystemTime = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let staged = dir.path().join("staged");
    fs::write(&staged, b"abd").expect("write");
    fs::File::options()
        .write(true)
        .open(&staged)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    fs::rename(&staged, &path).expect("rename");
    assert_eq!(digest(&h, &path).await, sha(ABD));
    assert_eq!(h.computed(), 3);
}

#[tokio::test]
async fn a_rewrite_with_its_old_mtime_put_back_is_still_a_new_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bin");
    fs::write(&path, b"abc").expect("write");
    let h = hasher(1 << 20);
    assert_eq!(digest(&h, &path).await, sha(ABC));
    let mtime = fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let mut file = fs::File::options().write(true).open(&path).expect("open");
    file.write_all(b"abd").expect("rewrite");
    // Put mtime back, as `touch -d` would: only ctime (and the content) still differ.
    file.set_modified(mtime).expect("reset mtime");
    drop(file);
    assert_eq!(
        fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime"),
        mtime
    );
    assert_eq!(digest(&h, &path).await, sha(ABD));
}

#[tokio::test]
async fn respects_the_size_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    let large = dir.path().join("large");
    fs::write(&small, b"0123456789").expect("write");
    fs::write(&large, b"0123456789A").expect("write");
    let h = hasher(10);
    assert!(matches!(digest(&h, &small).await, ExeDigest::Sha256(_)));
    assert_eq!(digest(&h, &large).await, ExeDigest::TooLarge { size: 11 });
    assert_eq!(h.computed(), 2);
    // The verdict is cached like a digest.
    assert_eq!(digest(&h, &large).await, ExeDigest::TooLarge { size: 11 });
    assert_eq!(h.computed(), 2);
}

#[tokio::test]
async fn concurrent_first_requests_share_one_computation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bin");
    fs::write(&path, vec![7u8; 4 << 20]).expect("write");
    let shared = hasher(1 << 30);
    // Polled together: a naive check-then-compute would start four computations here.
    let (first, second, third, fourth) = tokio::join!(
        digest(&shared, &path),
        digest(&shared, &path),
        digest(&shared, &path),
        digest(&shared, &path)
    );
    assert_eq!(shared.computed(), 1);
    assert!(matches!(first, ExeDigest::Sha256(_)));
    assert!([second, third, fourth].iter().all(|x| *x == first));
}

#[test]
fn hex_is_lowercase_and_padded() {
    assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
}
