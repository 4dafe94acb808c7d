//! `ringcast-bench`: runs the whole-pipeline scenarios of docs/benchmarks.md, prints a table per
//! scenario and appends JSON lines to `target/bench-results/<scenario>.jsonl`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use benches::report::{append_jsonl, render_table};
use benches::scenario::{self, Options};

fn help() -> String {
    let mut s = String::from(
        "ringcast-bench: whole-pipeline benchmarks of ringcast against today's tools.\n\
         \n\
         Usage: cargo run --release -p benches --bin ringcast-bench -- [OPTIONS] [SCENARIO...]\n\
         \n\
         Every figure is compared as a ratio with a baseline measured in the same run (the\n\
         machines are shared and noisy; absolute values are for information). Variants are\n\
         interleaved and repeated; the table shows medians. Progress goes to stderr, the\n\
         tables to stdout, and every figure and ratio is appended as a JSON line\n\
         {\"scenario\",\"variant\",\"metric\",\"value\",\"unit\",\"run_id\",\"time\"} to\n\
         target/bench-results/<scenario>.jsonl.\n\
         \n\
         Scenarios (default: all):\n",
    );
    for sc in scenario::registry() {
        s.push_str(&format!("  {:<4}{}\n", sc.key, sc.title));
        s.push_str(&wrap(sc.about, 6, 92));
    }
    s.push_str(
        "\nOptions:\n\
         \x20 --quick         smaller sizes, one repetition (checks the setup; figures are rough)\n\
         \x20 --reps N        repetitions instead of the scenario's default\n\
         \x20 --keep          keep every run's files in target/bench-tmp/<run id>/ (guest log,\n\
         \x20                 QEMU's stderr, outputs)\n\
         \x20 --results DIR   where the JSON lines go (default: target/bench-results)\n\
         \x20 --qemu-arg ARG  pass ARG to every QEMU (repeatable), e.g. --qemu-arg -trace\n\
         \x20                 --qemu-arg virtio_console_flush_buf: scenario E then counts the\n\
         \x20                 virtconsole's flushes and short writes (tracing slows QEMU down:\n\
         \x20                 such runs explain, they do not measure)\n\
         \x20 --plugin-opts O append O to the plugin's config= (e.g. ring=4M for a 4 MiB ring)\n\
         \x20 --set KEY=VAL   a scenario knob (E: hvc_bytes, serial_bytes; e.g. --set\n\
         \x20                 serial_bytes=4096 to time hvc0 nearly alone)\n\
         \x20 -h, --help      this text\n\
         \n\
         Example:\n\
         \x20 cargo run --release -p benches --bin ringcast-bench -- e\n\
         \x20 cargo run --release -p benches --bin ringcast-bench -- --quick e\n\
         \x20 cargo run --release -p benches --bin ringcast-bench -- --quick --keep e \\\n\
         \x20     --qemu-arg -trace --qemu-arg virtio_console_flush_buf\n",
    );
    s
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + w.len() > width {
            out.push_str(&format!("{}{line}\n", " ".repeat(indent)));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&format!("{}{line}\n", " ".repeat(indent)));
    }
    out
}

fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // target/<profile>/ringcast-bench → target/
    if let Ok(exe) = std::env::current_exe() {
        if let Some(t) = exe.parent().and_then(|p| p.parent()) {
            if t.file_name().is_some_and(|n| n == "target") {
                return t.to_path_buf();
            }
        }
    }
    testbed::qemu::workspace_root().join("target")
}

fn main() -> ExitCode {
    // The in-process servers of C and D log like ringcastd when RUST_LOG asks for it.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut quick = false;
    let mut keep = false;
    let mut results = None;
    let mut reps = None;
    let mut qemu_args = Vec::new();
    let mut plugin_opts = None;
    let mut settings = Vec::new();
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                print!("{}", help());
                return ExitCode::SUCCESS;
            }
            "--quick" => quick = true,
            "--keep" => keep = true,
            "--results" | "--reps" | "--qemu-arg" | "--plugin-opts" | "--set" => {
                let Some(v) = args.next() else {
                    eprintln!("ringcast-bench: {a} needs a value (see --help)");
                    return ExitCode::from(2);
                };
                match a.as_str() {
                    "--results" => results = Some(PathBuf::from(v)),
                    "--qemu-arg" => qemu_args.push(v),
                    "--plugin-opts" => plugin_opts = Some(v),
                    "--set" => match v.split_once('=') {
                        Some((k, val)) => settings.push((k.to_owned(), val.to_owned())),
                        None => {
                            eprintln!("ringcast-bench: --set needs KEY=VALUE");
                            return ExitCode::from(2);
                        }
                    },
                    _ => match v.parse::<usize>() {
                        Ok(n) if n > 0 => reps = Some(n),
                        _ => {
                            eprintln!("ringcast-bench: --reps needs a positive number");
                            return ExitCode::from(2);
                        }
                    },
                }
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            s if s.starts_with('-') => {
                eprintln!("ringcast-bench: unknown option {s} (see --help)");
                return ExitCode::from(2);
            }
            "all" => chosen.extend(scenario::registry()),
            s => match scenario::find(s) {
                Some(sc) => chosen.push(sc),
                None => {
                    let keys: Vec<&str> = scenario::registry().iter().map(|s| s.key).collect();
                    eprintln!(
                        "ringcast-bench: no scenario '{s}' (have: {}, all)",
                        keys.join(", ")
                    );
                    return ExitCode::from(2);
                }
            },
        }
    }
    if chosen.is_empty() {
        chosen.extend(scenario::registry());
    }

    let target = target_dir();
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let run_id = format!("{secs}-{}", std::process::id());
    let results = results.unwrap_or_else(|| target.join("bench-results"));
    let work_dir = target.join("bench-tmp").join(&run_id);
    if let Err(e) = std::fs::create_dir_all(&work_dir) {
        eprintln!("ringcast-bench: {}: {e}", work_dir.display());
        return ExitCode::FAILURE;
    }
    let opts = Options {
        quick,
        run_id: run_id.clone(),
        work_dir: work_dir.clone(),
        target_dir: target,
        keep,
        reps,
        qemu_args,
        plugin_opts,
        settings,
    };
    eprintln!(
        "ringcast-bench: run {run_id}{}, scenarios {}",
        if quick { " (quick)" } else { "" },
        chosen.iter().map(|s| s.key).collect::<Vec<_>>().join(" ")
    );
    let mut failed = false;
    for sc in chosen {
        eprintln!("ringcast-bench: scenario {}: {}", sc.key, sc.title);
        match (sc.run)(&opts) {
            Ok(outcome) => {
                println!("{}", render_table(sc.title, &outcome));
                match append_jsonl(&results, sc.key, &outcome, &run_id) {
                    Ok(p) => eprintln!("ringcast-bench: appended to {}", p.display()),
                    Err(e) => {
                        eprintln!("ringcast-bench: writing results: {e}");
                        failed = true;
                    }
                }
            }
            Err(e) => {
                eprintln!("ringcast-bench: scenario {} failed: {e}", sc.key);
                failed = true;
            }
        }
    }
    if keep {
        eprintln!("ringcast-bench: scratch kept in {}", work_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
