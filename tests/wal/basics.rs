//! Behaviour on literal inputs: refused batches, segment collection after purges, metadata
//! carried across collection, group commit under concurrent writers, the directory lock, and
//! the exact error for damage before a later batch.

use std::sync::Arc;

use ranged::services::error::Error;
use ranged::services::wal::{Wal, WalConfig, WriteBatch, segment};

fn small() -> WalConfig {
    WalConfig { segment_size: 1024 }
}

#[test]
fn a_batch_with_an_entry_out_of_order_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    wal.write(WriteBatch::new().append(1, 1, &b"a"[..]).append(1, 2, &b"b"[..]).clone()).unwrap();
    let refused = wal.write(WriteBatch::new().append(2, 0, &b"x"[..]).append(1, 5, &b"gap"[..]).clone());
    assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
    assert_eq!(wal.groups(), vec![1]);
    assert_eq!(wal.entries(1, 0..10).unwrap(), vec![(1, b"a".to_vec()), (2, b"b".to_vec())]);
    let below_purge = wal.write(WriteBatch::new().purge_up_to(1, 1).truncate_from(1, 1).clone());
    assert!(matches!(below_purge, Err(Error::InvalidArgument(_))), "{below_purge:?}");
    assert_eq!(wal.first_index(1), Some(1));
}

#[test]
fn purged_segments_are_deleted_and_metadata_outlives_them() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    for index in 1..=60u64 {
        let mut batch = WriteBatch::new();
        batch.append(1, index, vec![1; 100]).append(2, index, vec![2; 50]);
        if index == 3 {
            batch.put_meta(1, "vote", "term 3 node 2").put_meta(2, "vote", "term 1 node 1");
        }
        wal.write(batch).unwrap();
    }
    let before = wal.segment_files().len();
    assert!(before >= 5, "60 batches of 150+ bytes fill several 1 KiB segments: {before}");
    // Group 2 alone still pins every segment.
    wal.write(WriteBatch::new().purge_up_to(1, 60).clone()).unwrap();
    assert_eq!(wal.stats().segments_deleted, 0);
    let before = wal.segment_files().len();
    wal.write(WriteBatch::new().purge_up_to(2, 55).clone()).unwrap();
    // Collection runs when the active segment is sealed: fill it.
    for _ in 0..20 {
        if wal.stats().segments_deleted > 0 {
            break;
        }
        wal.write(WriteBatch::new().put_meta(3, "filler", vec![0; 300]).clone()).unwrap();
    }
    let after = wal.segment_files().len();
    assert!(after < before, "{after} files after purging, {before} before");
    assert!(wal.stats().segments_deleted > 0);
    assert_eq!(segment::list(dir.path()).unwrap().len(), after, "the files are gone from the directory");
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.meta(1, b"vote"), Some(b"term 3 node 2".to_vec()));
    assert_eq!(wal.meta(2, b"vote"), Some(b"term 1 node 1".to_vec()));
    assert_eq!((wal.purged(1), wal.first_index(1), wal.last_index(1)), (Some(60), None, None));
    assert_eq!((wal.purged(2), wal.first_index(2), wal.last_index(2)), (Some(55), Some(56), Some(60)));
    assert_eq!(wal.entries(2, 0..100).unwrap().len(), 5);
    wal.write(WriteBatch::new().append(1, 61, &b"next"[..]).clone()).unwrap();
    assert_eq!(wal.entries(1, 61..62).unwrap(), vec![(61, b"next".to_vec())]);
}

#[test]
fn concurrent_writers_share_writes_and_every_batch_survives() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), WalConfig { segment_size: 64 << 10 }).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|group| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for index in 0..40u64 {
                    wal.write(WriteBatch::new().append(group, index, index.to_le_bytes().to_vec()).clone()).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.batches, 320);
    assert!(stats.writes < stats.batches, "group commit: {stats:?}");
    drop(Arc::into_inner(wal).expect("the threads are done"));
    let wal = Wal::open(dir.path(), WalConfig { segment_size: 64 << 10 }).unwrap();
    for group in 0..8u64 {
        let entries = wal.entries(group, 0..40).unwrap();
        let expected: Vec<(u64, Vec<u8>)> = (0..40u64).map(|i| (i, i.to_le_bytes().to_vec())).collect();
        assert_eq!(entries, expected, "group {group}");
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), small()).unwrap();
    let second = Wal::open(dir.path(), small());
    assert!(matches!(&second, Err(Error::FailedPrecondition(m)) if m.contains("in use")), "{:?}", second.err());
}

#[test]
fn damage_in_a_sealed_segment_is_refused_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    for index in 0..30u64 {
        wal.write(WriteBatch::new().append(7, index, vec![index as u8; 200]).clone()).unwrap();
    }
    drop(wal);
    let (_, first) = segment::list(dir.path()).unwrap().remove(0);
    let mut data = std::fs::read(&first).unwrap();
    data[segment::HEADER_LEN as usize + 20] ^= 0x01;
    std::fs::write(&first, data).unwrap();
    let refused = Wal::open(dir.path(), small()).err().expect("refused");
    assert_eq!(refused.to_string(), format!("wal: {}: corrupt at byte offset 32: checksum mismatch", first.display()));
}

#[test]
fn damage_followed_by_a_later_batch_in_the_last_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    for index in 0..3u64 {
        wal.write(WriteBatch::new().append(7, index, vec![9; 10]).clone()).unwrap();
    }
    drop(wal);
    let (_, path) = segment::list(dir.path()).unwrap().remove(0);
    let mut data = std::fs::read(&path).unwrap();
    // Batch 1 is an entry record (35 bytes) and a commit record (25 bytes): damage batch 2's entry.
    data[32 + 60 + 30] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let refused = Wal::open(dir.path(), WalConfig::default()).err().expect("refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "wal: {}: corrupt at byte offset 92: checksum mismatch, and batch 2 follows at byte offset 127",
            path.display()
        )
    );
}
