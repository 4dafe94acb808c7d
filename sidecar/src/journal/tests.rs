//! The journal's unit tests: RAM window, spool segments, retention, gaps, recovery.

use super::*;

fn cfg() -> JournalConfig {
    JournalConfig {
        window: 2 * BLOCK,
        segment_size: 100_000,
        segment_age: Duration::from_secs(3600),
        retention: 250_000,
    }
}

fn append(j: &mut Journal, bytes: &[u8]) {
    let (f, off) = j.spool_target(SystemTime::now()).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(bytes, off).unwrap();
    j.commit(bytes, true);
}

fn read_all(j: &Journal, mut cursor: u64) -> (Vec<u8>, Vec<(u64, u64, GapReason)>) {
    let mut data = Vec::new();
    let mut gaps = Vec::new();
    loop {
        match j.read_at(cursor, BLOCK) {
            ReadAt::Pending => return (data, gaps),
            ReadAt::Bytes(b) => {
                cursor += b.len() as u64;
                data.extend_from_slice(&b);
            }
            ReadAt::Disk {
                path,
                file_offset,
                len,
                ..
            } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; len];
                File::open(path)
                    .unwrap()
                    .read_exact_at(&mut buf, file_offset)
                    .unwrap();
                cursor += len as u64;
                data.extend_from_slice(&buf);
            }
            ReadAt::Gap { len, reason } => {
                gaps.push((cursor, len, reason));
                cursor += len;
            }
        }
    }
}

#[test]
fn bytes_come_back_from_ram_and_disk_with_gaps_where_bytes_were_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path().join("d"), cfg(), Meta::default()).unwrap();
    let a: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
    append(&mut j, &a[..70_000]);
    append(&mut j, &a[70_000..]);
    j.record_gap(1000);
    append(&mut j, b"after the gap");
    let (data, gaps) = read_all(&j, 0);
    assert_eq!(gaps, vec![(150_000, 1000, GapReason::Lost)]);
    assert_eq!(&data[..150_000], &a[..]);
    assert_eq!(&data[150_000..], b"after the gap");
    assert_eq!(j.end(), 151_013);
}

#[test]
fn a_reopened_journal_continues_at_its_end_and_keeps_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    {
        let mut j = Journal::open(d.clone(), cfg(), Meta::default()).unwrap();
        append(&mut j, b"hello ");
        j.set_session(9, 0);
        j.record_gap(10);
        append(&mut j, b"world");
    }
    let mut j = Journal::open(d.clone(), cfg(), Meta::default()).unwrap();
    assert_eq!(j.end(), 21);
    assert_eq!(j.meta().session, Some(9));
    append(&mut j, b"!");
    let (data, gaps) = read_all(&j, 0);
    assert_eq!(data, b"hello world!");
    assert_eq!(gaps, vec![(6, 10, GapReason::Lost)]);
    let current = fs::read_link(d.join("current.log")).unwrap();
    assert_eq!(current, PathBuf::from(format!("{:020}.log", 16)));
}

#[test]
fn old_segments_beyond_retention_become_retention_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path().join("d"), cfg(), Meta::default()).unwrap();
    let chunk = vec![7u8; 60_000];
    for _ in 0..10 {
        append(&mut j, &chunk);
    }
    let from = j.available_from();
    assert!(from > 0);
    // Retention is enforced when a segment starts; segments overshoot by one append.
    assert!(j.disk_bytes <= cfg().retention + cfg().segment_size + 2 * 60_000);
    match j.read_at(0, BLOCK) {
        ReadAt::Gap { len, reason } => {
            assert_eq!(reason, GapReason::Retention);
            assert_eq!(len, from);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    let (data, _) = read_all(&j, from);
    assert_eq!(data.len() as u64, 600_000 - from);
}

#[test]
fn bytes_that_leave_ram_after_the_spool_failed_are_counted_and_read_as_one_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path().join("d"), cfg(), Meta::default()).unwrap();
    let a: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    append(&mut j, &a[..50_000]);
    j.disable_spool(); // as after ENOSPC
    for piece in a[50_000..].chunks(10_000) {
        j.commit(piece, false);
    }
    let ram_from = j.ram.front().unwrap().start;
    assert_eq!(j.ram_only_dropped(), ram_from - 50_000);
    let (data, gaps) = read_all(&j, 0);
    assert_eq!(
        gaps,
        vec![(50_000, ram_from - 50_000, GapReason::Retention)]
    );
    assert_eq!(&data[..50_000], &a[..50_000]);
    assert_eq!(&data[50_000..], &a[ram_from as usize..]);
}

#[test]
fn meta_survives_awkward_names() {
    let m = Meta {
        vm: "a\nb\\c=d".into(),
        device: "serial0".into(),
        kind: "console".into(),
        session: Some(u64::MAX),
        base: 5,
        pruned_to: 3,
        uuid: "5c1b2a9e-0c3f-4a1e-9b7d-2f6e8a4c1d3b".into(),
    };
    assert_eq!(Meta::decode(&m.encode()), m);
}

#[test]
fn meta_keeps_a_trailing_carriage_return_and_other_control_characters() {
    for vm in ["tty\r", "a\r\nb", "\r", "x\\r", "\\\r\n"] {
        let m = Meta {
            vm: vm.into(),
            device: "dev\r".into(),
            kind: "console".into(),
            ..Meta::default()
        };
        assert_eq!(Meta::decode(&m.encode()), m, "{vm:?}");
    }
}

#[test]
fn a_directory_holding_another_devices_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let owner = Meta {
        vm: "prod db".into(),
        device: "serial0".into(),
        kind: "console".into(),
        ..Meta::default()
    };
    let mut j = Journal::open(d.clone(), cfg(), owner.clone()).unwrap();
    append(&mut j, b"secret history");
    drop(j);
    let other = Meta {
        vm: "prod_db-4b77ecbe".into(),
        ..owner.clone()
    };
    let e = Journal::open(d.clone(), cfg(), other).unwrap_err();
    assert!(
        matches!(&e, Error::JournalOfAnother { owner, .. } if owner == "prod db/serial0"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("holds the journal of prod db/serial0"),
        "{e}"
    );
    // The owner still gets its journal back.
    let j = Journal::open(d, cfg(), owner).unwrap();
    assert_eq!(j.end(), 14);
}
