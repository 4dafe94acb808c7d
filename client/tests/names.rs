//! VM and device names against real ringcastd and ringcast processes: names that could
//! drive a terminal or a path are refused at registration with the reason; names that got
//! in anyway (journals of older versions) are printed escaped everywhere; and no VM can
//! reach another one's journal by choosing its escaped name.

use std::path::Path;
use std::time::Duration;

use testbed::kit::*;

const HOSTILE: &str = "vm\u{1b}]0;owned\u{7}\u{1b}[31m";
const HOSTILE_ESCAPED: &str = "vm\\u{1b}]0;owned\\u{7}\\u{1b}[31m";

fn start(dir: &Path) -> Ringcastd {
    Ringcastd::start(dir, &dir.join("state"), &[])
}

fn assert_no_terminal_controls(what: &str, text: &str) {
    assert!(
        !text.contains(['\u{1b}', '\u{7}', '\r']),
        "{what} holds raw control characters: {text:?}"
    );
}

/// Runs `ringcast ARGS`, which must succeed, and returns its stdout.
fn ringcast(d: &Ringcastd, args: &[&str]) -> String {
    let out = d.ringcast().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ringcast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn names_that_break_the_grammar_are_refused_at_registration_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let long = "v".repeat(129);
    let cases: [(&str, &str, &str); 6] = [
        (
            HOSTILE,
            "serial0",
            "the VM name \"vm\\u{1b}]0;owned\\u{7}\\u{1b}[31m\" contains the control or \
             invisible character U+001B; give the VM another -name",
        ),
        ("vm", "a/b", "the device id \"a/b\" contains '/'"),
        (
            "vm",
            "tty\r",
            "the device id \"tty\\r\" contains the control or invisible character U+000D",
        ),
        ("vm", "a\nb", "the device id \"a\\nb\" contains the control"),
        (&long, "serial0", "is 129 bytes long; at most 128"),
        ("vm", "", "empty device id"),
    ];
    for (vm, device, reason) in cases {
        let mut c = FakeConsole::new(&d.socket(), vm, device, 1, 4096);
        let e = c
            .try_connect()
            .expect_err(&format!("{vm:?}/{device:?} was accepted"));
        assert!(e.starts_with("refused: "), "{e}");
        assert!(e.contains(reason), "{vm:?}/{device:?}: {e}");
    }
    let mut c = FakeConsole::new(&d.socket(), "vm", "serial0", 1, 4096);
    c.desc.vm_uuid = "not-a-uuid".into();
    let e = c.try_connect().unwrap_err();
    assert!(
        e.contains("the VM UUID \"not-a-uuid\" is not a UUID"),
        "{e}"
    );
    // Nothing was left behind: no device, no journal directory.
    assert!(
        d.stats_table().contains("(no devices)"),
        "{}",
        d.stats_table()
    );
    let left: Vec<_> = std::fs::read_dir(&d.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with("server."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let log = d.log();
    assert!(log.contains("registration refused"), "{log}");
    assert_no_terminal_controls("ringcastd's log", &log);
    // Names that keep the grammar, spaces and all, are accepted.
    let mut ok = FakeConsole::new(&d.socket(), "prod db", "serial 0", 1, 4096);
    ok.connect();
}

#[test]
fn a_hostile_name_from_an_old_journal_is_printed_escaped_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    write_journal(
        &state.join("vm_-1").join("serial0"),
        HOSTILE,
        "serial0",
        b"old bytes",
    );
    // A name ending in a carriage return keeps it when the metadata is read back.
    write_journal(&state.join("vm2").join("tty_-2"), "vm2", "tty\r", b"cr");
    write_journal(&state.join("vm2").join("tty"), "vm2", "tty", b"plain");
    let d = start(dir.path());
    let list = ringcast(&d, &["list"]);
    assert!(list.contains("vm2/tty\\r "), "{list}");
    assert!(list.contains("vm2/tty "), "{list}");
    assert_eq!(d.stat("vm2/tty\\r", "JOURNAL").as_deref(), Some("0..2"));
    let device = format!("{HOSTILE_ESCAPED}/serial0");
    for args in [&["list"][..], &["stats"]] {
        let out = ringcast(&d, args);
        assert_no_terminal_controls(&format!("ringcast {args:?}"), &out);
        assert!(out.contains(&device), "ringcast {args:?}:\n{out}");
    }
    let table = d.stats_table();
    assert_no_terminal_controls("ringcastd stats", &table);
    assert!(table.contains(&device), "{table}");
    let log = d.log();
    assert_no_terminal_controls("ringcastd's log", &log);
    assert!(log.contains(&device), "{log}");
}

#[test]
fn a_vm_named_like_anothers_escaped_name_gets_its_own_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let secret = stream(13, 0, 65_536);
    let mut victim = FakeConsole::new(&d.socket(), "prod db", "serial0", 1, 1 << 17);
    victim.connect();
    victim.write_all(&secret);
    victim.wait_drained();
    drop(victim);
    // The escaped directory name older versions gave `prod db`.
    let mut attacker = FakeConsole::new(&d.socket(), "prod_db-4b77ecbe", "serial0", 2, 4096);
    attacker.connect();
    attacker.write_all(b"mine");
    attacker.wait_drained();
    let file = dir.path().join("capture.log");
    let out = d
        .ringcast()
        .args(["capture", "prod_db-4b77ecbe/serial0", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine", "{err}");
    let out = d
        .ringcast()
        .args(["capture", "prod db/serial0", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha(&std::fs::read(&file).unwrap()), sha(&secret));
    let victim_dir = d.state.join("prod%20db").join("serial0");
    assert_eq!(read_spool(&victim_dir).0, secret);
    assert_eq!(
        read_spool(&d.state.join("prod_db-4b77ecbe").join("serial0")).0,
        b"mine"
    );
}

#[test]
fn a_journal_left_under_an_old_shared_directory_name_is_moved_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let old = state.join("prod_db-4b77ecbe").join("serial0");
    let history = stream(14, 0, 65_536);
    write_journal(&old, "prod db", "serial0", &history);
    let mut d = start(dir.path());
    assert!(!old.exists(), "the old directory is still there");
    assert_eq!(
        read_spool(&state.join("prod%20db").join("serial0")).0,
        history
    );
    assert!(
        d.log().contains("journal moved to its device's directory"),
        "{}",
        d.log()
    );
    // The VM whose name is the old directory's starts with an empty history of its own.
    let mut attacker = FakeConsole::new(&d.socket(), "prod_db-4b77ecbe", "serial0", 2, 4096);
    attacker.connect();
    attacker.write_all(b"mine");
    attacker.wait_drained();
    d.wait_until("the attacker's bytes", Duration::from_secs(30), || {
        d.stat("prod_db-4b77ecbe/serial0", "BYTES").as_deref() == Some("4")
    });
    assert_eq!(
        d.stat("prod_db-4b77ecbe/serial0", "JOURNAL").as_deref(),
        Some("0..4")
    );
    d.kill9();
}

#[test]
fn two_journal_directories_claiming_one_device_are_reported_and_neither_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let home = state.join("prod%20db").join("serial0");
    let stray = state.join("prod_db-4b77ecbe").join("serial0");
    write_journal(&home, "prod db", "serial0", b"the real one");
    write_journal(&stray, "prod db", "serial0", b"a copy");
    let d = start(dir.path());
    let log = d.log();
    assert!(
        log.contains("two journal directories name the same device"),
        "{log}"
    );
    assert!(log.contains(&stray.display().to_string()), "{log}");
    assert_eq!(read_spool(&home).0, b"the real one");
    assert_eq!(read_spool(&stray).0, b"a copy");
    assert_eq!(
        d.stat("prod db/serial0", "JOURNAL").as_deref(),
        Some("0..12")
    );
}

#[test]
fn a_device_list_larger_than_a_frame_gets_a_clear_error_and_the_connection_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // 2000 journals (of an older version) with names of 255 bytes: a list of more than
    // 1 MiB.
    for i in 0..2000 {
        let vm = format!("vm{i:04}{}", "x".repeat(249));
        let device = format!("serial{}", "y".repeat(249));
        write_journal(&state.join(format!("old{i}")).join("d"), &vm, &device, b"x");
    }
    let d = start(dir.path());
    for args in [&["list"][..], &["stats"]] {
        let out = d.ringcast().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("the answer does not fit in one frame")
                && err.contains("more devices (or longer names) than one reply can carry"),
            "ringcast {args:?}: {err}"
        );
    }
    // The same connection still answers after the refusal.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = testbed::kit::clients::RingcastdExt::session(&d).await;
        assert!(s.list().await.is_err());
        let vm = format!("vm0000{}", "x".repeat(249));
        let device = format!("serial{}", "y".repeat(249));
        let mut con = s
            .attach_console(&vm, &device, client::Mode::Read, client::StartAt::Offset(0))
            .await
            .expect("attach after the refused list");
        match con.next().await.unwrap() {
            Some(client::ConsoleItem::Chunk { bytes, .. }) => assert_eq!(&bytes[..], b"x"),
            other => panic!("{other:?}"),
        }
        assert!(s.list().await.is_err());
    });
}
