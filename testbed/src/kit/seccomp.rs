//! Seccomp filters for the tests that check which system calls a path makes, or how a
//! process copes with one being denied. A filter applies to the calling thread and every
//! thread it starts later, and cannot be lifted: install it in a child process.

use libc::{sock_filter, sock_fprog};

const LD_ABS_W: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Kills the process on any system call but `write` and `exit_group` from now on.
#[cfg(target_arch = "x86_64")]
pub fn only_write_and_exit_from_now_on() -> std::io::Result<()> {
    install(&[
        stmt(LD_ABS_W, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(LD_ABS_W, 0), // seccomp_data.nr
        jeq(libc::SYS_write as u32, 2, 0),
        jeq(libc::SYS_exit_group as u32, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ])
}

/// Makes the system call `nr` fail with `errno` from now on; every other call is allowed.
/// Async-signal-safe (it allocates nothing): usable in `Command::pre_exec`.
#[cfg(target_arch = "x86_64")]
pub fn deny_from_now_on(nr: libc::c_long, errno: i32) -> std::io::Result<()> {
    install(&[
        stmt(LD_ABS_W, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 0, 2),
        stmt(LD_ABS_W, 0), // seccomp_data.nr
        jeq(nr as u32, 0, 1),
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | (errno as u32 & 0xffff)),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
    ])
}

fn install(filter: &[sock_filter]) -> std::io::Result<()> {
    let prog = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl and seccomp calls with a valid filter program that outlives them.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const sock_fprog,
            ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
