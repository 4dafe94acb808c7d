//! What a client may do with a device, and the attach decision that follows from it.

use super::End;
use crate::codec::{DeviceKind, Mode, StartAt};
use crate::ErrorCode;

/// A client's rights on one device (the union of the authorization rules that match it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    /// The console's output: its history and live.
    pub read: bool,
    /// The console's output live only, from the moment of attaching.
    pub spy: bool,
    /// Console input (with the console's write lock); with `audio`, sending sound to an
    /// audio device's capture side (`ringcast mic`, with the device's microphone lock).
    pub write: bool,
    /// A QEMU monitor (QMP or HMP) on a console device: any use of it. Never implied by
    /// `write`: a monitor controls the whole VM and its host process.
    pub monitor: bool,
    /// An audio device: listening (and, with `write`, the microphone).
    pub audio: bool,
}

impl Rights {
    /// Every right.
    pub const ALL: Rights = Rights {
        read: true,
        spy: true,
        write: true,
        monitor: true,
        audio: true,
    };

    /// The names, in the authorization file's spelling.
    pub const NAMES: [&'static str; 5] = ["read", "spy", "write", "monitor", "audio"];

    /// Whether any right is held (the device is then listed).
    pub fn any(self) -> bool {
        self.read || self.spy || self.write || self.monitor || self.audio
    }

    /// Both sets together.
    pub fn union(self, o: Rights) -> Rights {
        Rights {
            read: self.read || o.read,
            spy: self.spy || o.spy,
            write: self.write || o.write,
            monitor: self.monitor || o.monitor,
            audio: self.audio || o.audio,
        }
    }

    /// Parses `read,spy,…` (`all` is every right).
    pub fn parse(list: &str) -> Result<Rights, String> {
        let mut r = Rights::default();
        for name in list.split(',') {
            match name.trim() {
                "read" => r.read = true,
                "spy" => r.spy = true,
                "write" => r.write = true,
                "monitor" => r.monitor = true,
                "audio" => r.audio = true,
                "all" => r = Rights::ALL,
                other => {
                    return Err(format!(
                        "unknown right {other:?} (use {} or all)",
                        Rights::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(r)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = [self.read, self.spy, self.write, self.monitor, self.audio];
        let names: Vec<&str> = Rights::NAMES
            .iter()
            .zip(held)
            .filter(|(_, h)| *h)
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// What the server knows of a device a client asked to attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Console or audio.
    pub kind: DeviceKind,
    /// A console whose output shows it is a QEMU monitor.
    pub monitor: bool,
}

/// Whether a client with `rights` on `what` may attach in `mode` from `start`, and from
/// where it then starts. `device` is `None` when there is no such device: a client with
/// no right on the name gets the same answer whether or not it exists, so names cannot be
/// probed.
pub fn authorize_attach(
    what: &str,
    device: Option<DeviceFacts>,
    rights: Rights,
    mode: Mode,
    start: StartAt,
) -> Result<StartAt, End> {
    let Some(device) = device.filter(|_| rights.any()) else {
        return Err(End::refuse(
            ErrorCode::NoSuchDevice,
            format!("no device {what} that this client may use"),
        ));
    };
    let refuse = |need: &str| {
        End::refuse(
            ErrorCode::NotAuthorized,
            format!("{need} (this client's rights on {what}: {rights})"),
        )
    };
    match device.kind {
        // Writing to an audio device sends sound to the guest's capture side (`ringcast
        // mic`): it needs the write right as well as the audio right, so a listener or a
        // spy can never put sound into the guest.
        DeviceKind::Audio if mode == Mode::Write && !(rights.audio && rights.write) => Err(refuse(
            &format!("sending audio to {what} (microphone) needs the audio and write rights"),
        )),
        DeviceKind::Audio if rights.audio => Ok(StartAt::Now),
        DeviceKind::Audio => Err(refuse(&format!(
            "listening to {what} needs the audio right"
        ))),
        DeviceKind::Console if device.monitor && !rights.monitor => Err(refuse(&format!(
            "{what} is a QEMU monitor: using it needs the monitor right"
        ))),
        DeviceKind::Console => {
            let allowed = match mode {
                Mode::Read => rights.read,
                Mode::Spy => rights.spy || rights.read,
                Mode::Write => rights.write,
            };
            if !allowed && !device.monitor {
                return Err(refuse(&format!(
                    "attaching to {what} in {} mode needs the {} right",
                    mode.name(),
                    mode.name()
                )));
            }
            // History is for readers: a spy, or a writer without read, starts now.
            Ok(if rights.read || (device.monitor && rights.monitor) {
                start
            } else {
                StartAt::Now
            })
        }
    }
}
