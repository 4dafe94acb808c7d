//! The lossy link by hand: two network namespaces joined by a userspace TUN forwarder with
//! seeded loss, delay, jitter and a rate limit (see testbed/LOSSY-LINK.md).
//!
//! ```text
//! lossy-link [OPTIONS] [--in-b 'SHELL CMD'] -- CMD ARGS...   run CMD in A, then tear down
//! lossy-link up [OPTIONS]                                    keep the link up until Ctrl-C / down
//! lossy-link down [--name NAME]                              stop an `up` link, delete its namespaces
//! lossy-link ctl [--name NAME] cut on|cut off|loss PCT|loss-ab PCT|loss-ba PCT|stats
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use testbed::lossy::{control_path, remove_named, Dir, LinkSpec, LossyLink};

const USAGE: &str = "\
usage:
  lossy-link [OPTIONS] [--in-b 'SHELL CMD'] -- CMD ARGS...
      create a link, start SHELL CMD in namespace B (background), run CMD in namespace A,
      print the link's counters, tear the link down; exits with CMD's status
  lossy-link up [OPTIONS] [--control PATH]
      create the link and keep it up until Ctrl-C, SIGTERM or `lossy-link down`
  lossy-link down [--name NAME]
  lossy-link ctl [--name NAME] [--control PATH] COMMAND
      COMMAND: cut on | cut off | loss PCT | loss-ab PCT | loss-ba PCT | stats

OPTIONS:
  --loss PCT      random loss per direction, percent (default 0)
  --loss-ab PCT   loss from A to B only      --loss-ba PCT   loss from B to A only
  --delay MS      one-way delay (default 0)  --jitter MS     +- jitter, no reordering (default 0)
  --rate MBIT     rate limit per direction, Mbit/s (default unlimited)
  --seed N        seed of the loss and jitter generators (default 1)
  --name NAME     namespaces NAMEa and NAMEb (default: lossy for up/down/ctl, rcl<pid>x0 otherwise)

Namespace A has 198.18.0.1/30 on tun0, namespace B 198.18.0.2/30. Needs root and iproute2.

examples:
  # iperf3 across 1% loss and 20 ms RTT: server in B, client in A
  lossy-link --loss 1 --delay 10 --in-b 'iperf3 -s -1' -- iperf3 -c 198.18.0.2 -t 5
  # a link that stays up; cut it for a while from another terminal
  lossy-link up --loss 1 --delay 10 &
  lossy-link ctl cut on; sleep 8; lossy-link ctl cut off
  lossy-link down";

fn usage_exit(msg: &str) -> ExitCode {
    eprintln!("lossy-link: {msg}\n{USAGE}");
    ExitCode::from(2)
}

struct Opts {
    spec: LinkSpec,
    loss_ab: Option<f64>,
    loss_ba: Option<f64>,
    name: Option<String>,
    control: Option<PathBuf>,
    in_b: Option<String>,
    rest: Vec<String>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        spec: LinkSpec::default(),
        loss_ab: None,
        loss_ba: None,
        name: None,
        control: None,
        in_b: None,
        rest: Vec::new(),
    };
    let mut i = 0;
    let num = |i: usize, flag: &str| -> Result<f64, String> {
        let v = args
            .get(i + 1)
            .ok_or_else(|| format!("{flag} wants a value"))?;
        v.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{flag}: bad number {v:?}"))
    };
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--loss" => o.spec.loss_pct = num(i, a)?,
            "--loss-ab" => o.loss_ab = Some(num(i, a)?),
            "--loss-ba" => o.loss_ba = Some(num(i, a)?),
            "--delay" => o.spec.delay_ms = num(i, a)?,
            "--jitter" => o.spec.jitter_ms = num(i, a)?,
            "--rate" => o.spec.rate_mbit = num(i, a)?,
            "--seed" => {
                let v = args.get(i + 1).ok_or("--seed wants a value")?;
                o.spec.seed = v.parse().map_err(|_| format!("--seed: bad number {v:?}"))?;
            }
            "--name" => o.name = Some(args.get(i + 1).ok_or("--name wants a value")?.clone()),
            "--control" => {
                o.control = Some(args.get(i + 1).ok_or("--control wants a value")?.into())
            }
            "--in-b" => o.in_b = Some(args.get(i + 1).ok_or("--in-b wants a value")?.clone()),
            "--" => {
                o.rest = args[i + 1..].to_vec();
                return Ok(o);
            }
            "-h" | "--help" => return Err(String::new()),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => {
                o.rest = args[i..].to_vec();
                return Ok(o);
            }
        }
        i += 2;
    }
    Ok(o)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts later), so that
/// one thread can wait for them with `sigwait` and tear the link down cleanly.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid; a null old mask is allowed.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is an initialised sigset_t whose signals are blocked; `sig` is writable.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn create(o: &Opts, default_name: Option<&str>) -> Result<LossyLink, String> {
    let link = match o.name.as_deref().or(default_name) {
        Some(name) => LossyLink::create_named(o.spec.clone(), name),
        None => LossyLink::create(o.spec.clone()),
    }
    .map_err(|e| e.to_string())?;
    if let Some(p) = o.loss_ab {
        link.set_loss(Dir::AToB, p);
    }
    if let Some(p) = o.loss_ba {
        link.set_loss(Dir::BToA, p);
    }
    Ok(link)
}

fn print_stats(link: &LossyLink) {
    eprintln!("lossy-link: {}", link.control().command("stats"));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = match args.first().map(String::as_str) {
        Some(m @ ("up" | "down" | "ctl")) => (m, &args[1..]),
        _ => ("run", &args[..]),
    };
    let o = match parse(rest) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_exit(&e),
    };
    match mode {
        "run" => run(o),
        "up" => up(o),
        "down" => down(o),
        _ => ctl(o),
    }
}

fn run(o: Opts) -> ExitCode {
    if o.rest.is_empty() {
        return usage_exit("nothing to run (give `-- CMD ARGS...`, or use `up`)");
    }
    let set = block_signals();
    let link = match create(&o, None) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lossy-link: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut b_child = match &o.in_b {
        Some(cmd) => match link
            .command_in_b("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("lossy-link: cannot start the command in B: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let mut child = match link.command_in_a(&o.rest[0]).args(&o.rest[1..]).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lossy-link: cannot start {:?}: {e}", o.rest[0]);
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id() as libc::pid_t;
    std::thread::spawn(move || loop {
        let sig = wait_signal(&set);
        // SAFETY: kill with a valid signal number; at worst the pid is gone (ESRCH).
        unsafe { libc::kill(pid, sig) };
    });
    let status = child.wait();
    if let Some(b) = b_child.as_mut() {
        // The command ran in its own process group: end all of it, not just the shell.
        // SAFETY: kill with a valid signal number; the group is that of our unreaped child.
        unsafe { libc::kill(-(b.id() as libc::pid_t), libc::SIGTERM) };
        let _ = b.wait();
    }
    print_stats(&link);
    drop(link);
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("lossy-link: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pid_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/lossy-link-{name}.pid"))
}

fn up(o: Opts) -> ExitCode {
    let set = block_signals();
    let name = o.name.clone().unwrap_or_else(|| "lossy".into());
    let link = match create(&o, Some(&name)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lossy-link: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = o.control.clone().unwrap_or_else(|| control_path(&name));
    if let Err(e) = link.serve_control(&control) {
        eprintln!("lossy-link: control socket {}: {e}", control.display());
        return ExitCode::FAILURE;
    }
    let _ = std::fs::write(pid_path(&name), format!("{}\n", std::process::id()));
    println!(
        "lossy-link up: {} ({}) <-> {} ({}); control {}; Ctrl-C or `lossy-link down --name {name}` ends it",
        link.ns_a(),
        link.addr_a(),
        link.ns_b(),
        link.addr_b(),
        control.display()
    );
    let _ = std::io::stdout().flush();
    let sig = wait_signal(&set);
    eprintln!("lossy-link: signal {sig}, tearing down");
    print_stats(&link);
    drop(link);
    let _ = std::fs::remove_file(&control);
    let _ = std::fs::remove_file(pid_path(&name));
    ExitCode::SUCCESS
}

fn down(o: Opts) -> ExitCode {
    let name = o.name.unwrap_or_else(|| "lossy".into());
    if let Ok(pid) = std::fs::read_to_string(pid_path(&name)) {
        if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
            // SAFETY: kill with a valid signal number; at worst the pid is gone (ESRCH).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            for _ in 0..50 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    let _ = std::fs::remove_file(pid_path(&name));
    let _ = std::fs::remove_file(control_path(&name));
    match remove_named(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lossy-link: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ctl(o: Opts) -> ExitCode {
    if o.rest.is_empty() {
        return usage_exit("ctl wants a command");
    }
    let name = o.name.clone().unwrap_or_else(|| "lossy".into());
    let path = o.control.clone().unwrap_or_else(|| control_path(&name));
    let result = (|| -> std::io::Result<String> {
        let mut s = UnixStream::connect(&path)?;
        writeln!(s, "{}", o.rest.join(" "))?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    })();
    match result {
        Ok(answer) => {
            print!("{answer}");
            if answer.starts_with("error") {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("lossy-link: control socket {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
