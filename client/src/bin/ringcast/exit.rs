//! The exit statuses of `ringcast`. Scripts test them (`capture` in CI, `--wait-timeout`),
//! so each number keeps its meaning; a new outcome gets a new number.

/// How `ringcast` ended, as its exit status. The top-level `--help` lists these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: an error, said on stderr; also a QMP error reply to `ringcast qmp`.
    Error = 1,
    /// 2: bad usage (an unknown option, a missing or malformed argument). clap's own
    /// status for arguments it refuses; `ringcast` never returns it itself.
    Usage = 2,
    /// 3: `capture` finished, but the server no longer had some of the bytes (gaps): the
    /// file has holes of zeros there, and stderr says where.
    CaptureHadGaps = 3,
    /// 4: `--wait`/`--wait-timeout` gave up: the device did not appear in time.
    WaitTimedOut = 4,
}

impl Exit {
    /// Every status, in order of their numbers.
    pub const ALL: [Exit; 5] = [
        Exit::Success,
        Exit::Error,
        Exit::Usage,
        Exit::CaptureHadGaps,
        Exit::WaitTimedOut,
    ];

    /// The number the process exits with.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Exit;
    use crate::args::Cli;

    #[test]
    fn exit_statuses_keep_their_numbers() {
        let codes: Vec<(Exit, u8)> = Exit::ALL.iter().map(|&e| (e, e.code())).collect();
        assert_eq!(
            codes,
            [
                (Exit::Success, 0),
                (Exit::Error, 1),
                (Exit::Usage, 2),
                (Exit::CaptureHadGaps, 3),
                (Exit::WaitTimedOut, 4),
            ]
        );
    }

    #[test]
    fn bad_usage_is_the_status_clap_exits_with() {
        let err = Cli::try_parse_from(["ringcast", "--no-such-option", "list"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(Exit::Usage.code()));
        let err = Cli::try_parse_from(["ringcast", "capture", "vm/serial0"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(Exit::Usage.code()));
    }

    #[test]
    fn top_level_help_lists_every_exit_status() {
        let help = Cli::command().render_long_help().to_string();
        for exit in Exit::ALL {
            let line = format!("\n  {}  ", exit.code());
            assert!(
                help.contains(&line),
                "--help does not list {exit:?}:\n{help}"
            );
        }
    }
}
