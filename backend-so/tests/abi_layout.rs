//! Pins the Rust mirror of the C ABI to the committed header: compiles a C program that
//! prints sizeof/offsetof of every struct, with the system C compiler, and compares.

use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use ringcast_backend::abi::*;

const HEADER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../qemu-patches/include");

macro_rules! layout {
    ($($ty:ident { $($field:ident),* })*) => {{
        let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"qemu/backend-plugin.h\"\nint main(void) {\n");
        let mut rust = String::new();
        $(
            c.push_str(&format!("printf(\"{} size %zu\\n\", sizeof({}));\n", stringify!($ty), stringify!($ty)));
            rust.push_str(&format!("{} size {}\n", stringify!($ty), size_of::<$ty>()));
            $(
                c.push_str(&format!("printf(\"{}.{} %zu\\n\", offsetof({}, {}));\n", stringify!($ty), stringify!($field), stringify!($ty), stringify!($field)));
                rust.push_str(&format!("{}.{} {}\n", stringify!($ty), stringify!($field), offset_of!($ty, $field)));
            )*
        )*
        c.push_str("return 0; }\n");
        (c, rust)
    }};
}

#[test]
fn rust_mirror_matches_the_c_header_byte_for_byte() {
    let (c, rust) = layout! {
        QbpTableHeader { abi_major, abi_minor, struct_size }
        QbpHost { header, log, clock_ns, fd_watch_add, fd_watch_remove, timer_new, timer_mod, timer_free }
        QbpInstanceInfo { header, id, vm_name, vm_uuid, config }
        QbpChardevFrontend { header, opaque, can_write, write }
        QbpChardevOps { header, open, close, write, write_ready, write_wait_fd, accept_input, set_fe_open, flags }
        QbpAudioFormat { frequency, channels, sample_format, big_endian, reserved }
        QbpAudioOps { header, open, close, out_open, out_close, out_enable, out_write, in_open, in_close, in_enable, in_read }
        QbpPluginInfo { header, name, chardev, audio }
    };
    let dir = std::env::temp_dir().join(format!("abi-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I", HEADER_DIR])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("a C compiler (cc) is needed for this test");
    assert!(status.success(), "the header does not compile cleanly");
    let out = Command::new(&exe).output().unwrap();
    let from_c = String::from_utf8(out.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    for (c_line, rust_line) in from_c.lines().zip(rust.lines()) {
        assert_eq!(c_line, rust_line, "C header vs Rust mirror");
    }
    assert_eq!(from_c.lines().count(), rust.lines().count());
}

#[test]
fn constants_match_the_c_header() {
    let header =
        std::fs::read_to_string(Path::new(HEADER_DIR).join("qemu/backend-plugin.h")).unwrap();
    for (name, value) in [
        ("QBP_ABI_MAJOR", QBP_ABI_MAJOR.to_string()),
        ("QBP_ABI_MINOR", QBP_ABI_MINOR.to_string()),
        ("QBP_EVENT_IN", format!("0x{QBP_EVENT_IN:03x}u")),
        ("QBP_EVENT_HUP", format!("0x{QBP_EVENT_HUP:03x}u")),
    ] {
        assert!(
            header.contains(&format!("#define {name} {value}")),
            "{name} should be {value} in the header"
        );
    }
    assert!(header.contains("#define QBP_PLUGIN_QUERY_SYMBOL \"qbp_plugin_query\""));
    assert_eq!(QBP_CHARDEV_FLAG_FLOW_CONTROL, 1);
    assert!(header.contains("#define QBP_CHARDEV_FLAG_FLOW_CONTROL (1ull << 0)"));
}
