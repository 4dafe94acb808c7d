//! A stand-in QEMU process: loads libringcast_backend.so, opens console devices through the
//! plugin ABI and writes each one's guest stream, the way a guest writing to its consoles
//! would, then exits (closing the devices, as QEMU does at shutdown).
//!
//! ```text
//! fake-qemu --vm NAME --opts socket=/run/ringcast/ringcastd.sock DEVICE=SEED:BYTES ...
//! ```
//!
//! Prints `DEVICE sha256=<hex> bytes=<n>` per device on stdout when done (`DEVICE zeros
//! bytes=<n>` for `DEVICE=zero:BYTES`, which writes zeros and hashes nothing, the input the
//! benchmark baselines read from /dev/zero).

use std::time::Duration;

use sha2::{Digest, Sha256};
use testbed::harness::{MainLoop, Plugin};
use testbed::stream::GuestStream;

const HELP: &str = "\
fake-qemu: a stand-in QEMU process for tests. Loads libringcast_backend.so
($RINGCAST_BACKEND_SO, default: the workspace build of this profile), opens one plugin
chardev per DEVICE as `-chardev plugin,id=DEVICE,config=OPTS` would, waits until each is
attached to ringcastd, writes BYTES of the guest stream SEED (testbed/guest/README.md)
into each, interleaved 4 KiB at a time, prints `DEVICE sha256=HEX bytes=N` per device
and exits. SEED `zero` writes zeros instead and prints `DEVICE zeros bytes=N`.

usage: fake-qemu --vm NAME [--opts OPTS] [--attach-timeout-s N] DEVICE=SEED:BYTES ...

  --vm NAME               the VM name (as -name guest=NAME)
  --opts OPTS             the plugin's config= string (default: empty, i.e. the default
                          ringcastd socket)
  --attach-timeout-s N    how long to wait for ringcastd to accept the devices (default 30)

example:
  fake-qemu --vm vm1 --opts socket=/run/ringcast/ringcastd.sock serial0=1:1048576 hvc0=2:4096
";

fn usage() -> ! {
    eprint!("{HELP}");
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut vm, mut opts, mut wait_s) = (None, String::new(), 30u64);
    let mut devices = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return;
            }
            "--vm" => vm = args.next(),
            "--opts" => opts = args.next().unwrap_or_else(|| usage()),
            "--attach-timeout-s" => {
                wait_s = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            spec => {
                let (dev, rest) = spec.split_once('=').unwrap_or_else(|| usage());
                let (seed, bytes) = rest.split_once(':').unwrap_or_else(|| usage());
                // `zero`: zeros, nothing hashed.
                let seed: Option<u64> = match seed {
                    "zero" => None,
                    s => Some(s.parse().unwrap_or_else(|_| usage())),
                };
                let bytes: usize = bytes.parse().unwrap_or_else(|_| usage());
                devices.push((dev.to_owned(), seed, bytes));
            }
        }
    }
    let vm = vm.unwrap_or_else(|| usage());
    if devices.is_empty() {
        usage();
    }
    let plugin = testbed::kit::bins::try_plugin()
        .and_then(|p| Plugin::load(&p))
        .unwrap_or_else(|e| {
            eprintln!("fake-qemu: {e}");
            std::process::exit(1)
        });
    let lp = MainLoop::new();
    let chardevs: Vec<_> = devices
        .iter()
        .map(|(dev, _, _)| {
            plugin.open_chardev(&vm, dev, &opts).unwrap_or_else(|e| {
                eprintln!("fake-qemu: {dev}: {e}");
                std::process::exit(1)
            })
        })
        .collect();
    let attached = lp.run_until(Duration::from_secs(wait_s), || {
        lp.logs()
            .iter()
            .filter(|l| l.contains("streaming to the daemon"))
            .count()
            == chardevs.len()
    });
    if !attached {
        eprintln!("fake-qemu: not every device attached within {wait_s} s");
        std::process::exit(1);
    }
    // Interleave the devices in 4 KiB steps, like guests writing to several consoles.
    let mut streams: Vec<_> = devices
        .iter()
        .map(|(_, seed, bytes)| (seed.map(GuestStream::new), *bytes, Sha256::new()))
        .collect();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut active = false;
        for (i, (stream, left, hash)) in streams.iter_mut().enumerate() {
            if *left == 0 {
                continue;
            }
            active = true;
            let n = (*left).min(buf.len());
            if let Some(stream) = stream {
                stream.fill(&mut buf[..n]);
            }
            if let Err(e) = chardevs[i].write_all(&lp, &buf[..n], Duration::from_secs(60)) {
                eprintln!("fake-qemu: {}: {e}", devices[i].0);
                std::process::exit(1);
            }
            if stream.is_some() {
                hash.update(&buf[..n]);
            }
            *left -= n;
        }
        if !active {
            break;
        }
    }
    for ((dev, seed, bytes), (_, _, hash)) in devices.iter().zip(streams) {
        match seed {
            Some(_) => println!("{dev} sha256={:x} bytes={bytes}", hash.finalize()),
            None => println!("{dev} zeros bytes={bytes}"),
        }
    }
}
