//! The server's side of the rules: what each stream a client opens may carry.

use std::time::Instant;

use bytes::Bytes;

use super::credit::GapLedger;
use super::End;
use crate::codec::{AudioCodec, Frame, Mode, StartAt, MAX_INPUT};
use crate::proto::{self, ConsoleCredit, Limits, RequestBudget};
use crate::ErrorCode;

/// The handshake on the control stream: the client's Hello within the handshake deadline.
#[derive(Debug, Clone)]
pub struct Handshake {
    deadline: Instant,
}

/// A successful handshake: answer `Frame::Welcome { version, .. }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version chosen.
    pub version: u16,
    /// The client's software, for the log.
    pub client_software: String,
}

impl Handshake {
    /// The handshake of a connection accepted at `now`.
    pub fn new(now: Instant, limits: &Limits) -> Self {
        Handshake {
            deadline: now + limits.handshake_timeout,
        }
    }

    /// When the Hello must have arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time is `now`: ends the connection if the Hello is late.
    pub fn on_time(&self, now: Instant) -> Option<End> {
        (now >= self.deadline).then(|| End::close(ErrorCode::ProtocolViolation, "no Hello in time"))
    }

    /// The control stream's first frame (`None`: the client finished the stream).
    pub fn on_frame(&self, frame: Option<Frame>) -> Result<Welcome, End> {
        let Some(frame) = frame else {
            return Err(End::Finish);
        };
        let Frame::Hello {
            min_version,
            max_version,
            software,
        } = frame
        else {
            return Err(End::close(
                ErrorCode::ProtocolViolation,
                format!("expected Hello, got {}", frame.name()),
            ));
        };
        match proto::negotiate(min_version, max_version) {
            Ok(version) => Ok(Welcome {
                version,
                client_software: software,
            }),
            Err(code) => Err(End::RefuseAndClose {
                code,
                message: format!(
                    "client speaks {min_version}..={max_version}, server {}..={}",
                    proto::MIN_VERSION,
                    proto::MAX_VERSION
                ),
            }),
        }
    }
}

/// A request on the control stream after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    /// List the devices the client may see, answered with this request id.
    ListDevices {
        /// Echoed in the reply.
        request: u32,
    },
    /// Every counter of those devices.
    GetStats {
        /// Echoed in the reply.
        request: u32,
    },
}

/// A frame on the control stream after the handshake (`None`: the client finished it).
pub fn control_request(frame: Option<Frame>) -> Result<ControlRequest, End> {
    match frame {
        Some(Frame::ListDevices { request }) => Ok(ControlRequest::ListDevices { request }),
        Some(Frame::GetStats { request }) => Ok(ControlRequest::GetStats { request }),
        Some(other) => Err(End::close(
            ErrorCode::ProtocolViolation,
            format!("{} is not a control request", other.name()),
        )),
        None => Err(End::Finish),
    }
}

impl RequestBudget {
    /// Spends one request at `now`, or says how the connection ends (over its rate).
    pub fn spend(&mut self, now: Instant) -> Result<(), End> {
        if self.allow(now) {
            Ok(())
        } else {
            Err(End::close(ErrorCode::RateLimited, "too many requests"))
        }
    }
}

/// What a client's attachment stream asks for: its first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// VM name.
    pub vm: String,
    /// Device id.
    pub device: String,
    /// How a console is used.
    pub mode: Mode,
    /// Where a console attachment starts.
    pub start: StartAt,
    /// Audio: periods as datagrams.
    pub datagrams: bool,
    /// Audio: the codecs offered, in order of preference (empty: PCM only).
    pub codecs: Vec<AudioCodec>,
}

/// A new attachment stream: it must start with `Attach` within the handshake deadline.
#[derive(Debug, Clone)]
pub struct AttachmentStream {
    deadline: Instant,
}

impl AttachmentStream {
    /// A stream the client opened at `now`.
    pub fn new(now: Instant, limits: &Limits) -> Self {
        AttachmentStream {
            deadline: now + limits.handshake_timeout,
        }
    }

    /// When the Attach must have arrived.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time is `now`: ends the connection if the Attach is late.
    pub fn on_time(&self, now: Instant) -> Option<End> {
        (now >= self.deadline).then(|| {
            End::close(
                ErrorCode::ProtocolViolation,
                "no Attach on a new stream in time",
            )
        })
    }

    /// The stream's first frame (`None`: the client finished it at once).
    pub fn on_first_frame(&self, frame: Option<Frame>) -> Result<AttachRequest, End> {
        match frame {
            Some(Frame::Attach {
                vm,
                device,
                mode,
                start,
                datagrams,
                codecs,
            }) => Ok(AttachRequest {
                vm,
                device,
                mode,
                start,
                datagrams,
                codecs,
            }),
            Some(other) => Err(End::close(
                ErrorCode::ProtocolViolation,
                format!("a new stream must start with Attach, not {}", other.name()),
            )),
            None => Err(End::Finish),
        }
    }
}

/// What a frame on a console attachment asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleAction {
    /// Nothing to do beyond the bookkeeping already done (a `Consumed` report).
    Continue,
    /// Queue these keystrokes for the guest.
    Input(Bytes),
    /// The stream ends.
    End(End),
}

/// A console attachment after `Attached`: input under the mode, `Consumed` reports
/// checked against what was sent, the in-flight credit.
#[derive(Debug, Clone)]
pub struct ConsoleRules {
    mode: Mode,
    what: String,
    credit: ConsoleCredit,
    gaps: GapLedger,
    start: u64,
    consumed: u64,
}

impl ConsoleRules {
    /// An attachment to the console `what` (its name, for messages) in `mode` whose first
    /// item is at `offset`.
    pub fn new(what: impl Into<String>, mode: Mode, offset: u64) -> Self {
        ConsoleRules {
            mode,
            what: what.into(),
            credit: ConsoleCredit::new(offset),
            gaps: GapLedger::default(),
            start: offset,
            consumed: offset,
        }
    }

    /// Whether to read the client's next frame while `pending` input bytes still wait for
    /// the guest (input is read no faster than the guest takes it).
    pub fn reads_more(&self, pending: usize) -> bool {
        pending < MAX_INPUT
    }

    /// A frame from the client (`None`: it finished its side).
    pub fn on_frame(&mut self, frame: Option<Frame>) -> ConsoleAction {
        match frame {
            Some(Frame::Input { bytes }) if self.mode == Mode::Write => ConsoleAction::Input(bytes),
            Some(Frame::Input { .. }) => ConsoleAction::End(End::refuse(
                ErrorCode::ReadOnly,
                format!(
                    "this attachment to {} is {}: input refused",
                    self.what,
                    self.mode.name()
                ),
            )),
            Some(Frame::Consumed { offset }) => match self.credit.consumed(offset) {
                Ok(()) => {
                    self.consumed = self.consumed.max(offset);
                    self.gaps.consumed(self.consumed);
                    ConsoleAction::Continue
                }
                Err(code) => ConsoleAction::End(End::close(code, "Consumed beyond what was sent")),
            },
            Some(Frame::Detach) | None => ConsoleAction::End(End::Finish),
            Some(other) => ConsoleAction::End(End::close(
                ErrorCode::ProtocolViolation,
                format!("{} is not allowed on a console stream", other.name()),
            )),
        }
    }

    /// Console bytes that may be sent now under `bound` (from [`in_flight_bound`]).
    pub fn allowance(&self, bound: u64) -> u64 {
        bound.saturating_sub(self.in_flight())
    }

    /// Everything before `end` was sent.
    pub fn sent(&mut self, end: u64) {
        self.credit.sent(end);
    }

    /// A gap of `len` bytes at `offset` was sent (and [`ConsoleRules::sent`] its end): it
    /// holds the credit only for its frame ([`GAP_COST`](super::credit::GAP_COST)) until the client reports past it.
    pub fn skipped(&mut self, offset: u64, len: u64) {
        self.gaps.sent(offset, len);
    }

    /// Bytes sent and not yet reported read, a gap counting [`GAP_COST`](super::credit::GAP_COST).
    pub fn in_flight(&self) -> u64 {
        self.credit
            .in_flight()
            .saturating_sub(self.gaps.uncharged(self.consumed))
    }

    /// The highest offset the client reported read.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes of data (not gaps) the client reported read since the attachment began.
    pub fn delivered(&self) -> u64 {
        (self.consumed - self.start).saturating_sub(self.gaps.skipped_before(self.consumed))
    }
}

/// What the driver knows of a console stream's path: from its QUIC stack (window, RTT) and
/// from the stream's own credit ([`super::credit::DeliveryClock`]: the delivery rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathEstimate {
    /// The congestion controller's window: the bytes it lets be in flight, its estimate of
    /// the path's bandwidth-delay product (with its gain). 0 when unknown.
    pub window: u64,
    /// The smoothed round-trip time. Zero when unknown.
    pub rtt: std::time::Duration,
    /// Bytes per second the client reported read, recently at most (a windowed maximum).
    /// 0 when unknown.
    pub delivery_rate: u64,
}

/// The largest console in-flight bound, per stream, whatever the path: what a client that
/// stops reading (or a stopped client process) can make ringcastd hold for one console
/// stream in its send buffer. Below quinn's connection-wide send window (10 MB by default),
/// so a console at this bound still leaves room for audio written on a stream. 8 MiB moved
/// 1.4x more on a 1%-loss 20 ms path, but ringcastd's memory with 99 followers and a stalled
/// client then went over its bound (`client/tests/load.rs`: 169 MB against 151 MB).
pub const MAX_IN_FLIGHT: u64 = 4 << 20;

/// The ceiling while audio is live on the connection. What the console has sent and not
/// had reported is also what it can queue at the path's bottleneck ahead of audio: quinn's
/// window does not bound that (under the loss filter BBR's window was measured at 7–23 MB,
/// several times the bandwidth-delay product of a 20 ms path carrying 60 MB/s), and with an
/// 8 MiB ceiling audio's p99 rose from 2.4x to 3.8x its floor on such a link.
pub const MAX_IN_FLIGHT_WITH_AUDIO: u64 = 4 << 20;

/// Round trips a byte's credit takes to come back on a lossy path, at most in the usual
/// case: the trip to the client, a hold behind an earlier lost packet (its detection, about
/// a round trip, and its retransmission's trip), the report's trip back.
pub const RETURN_RTTS: u32 = 4;

/// The bound is this many times the delivery rate over [`RETURN_RTTS`] round trips: room to
/// grow when the credit, not the path, is what holds the rate.
pub const DELIVERY_GAIN: u64 = 2;

/// The console's in-flight bound (bytes sent and not yet reported read) on a path.
///
/// A console's credit comes back a round trip after its bytes leave (the client's
/// `Consumed` report), and on a lossy path later still: the client reads in order, so a
/// lost packet holds the stream's later bytes until its retransmission arrives. A bound
/// below the delivery rate times that return time caps the console at bound / return
/// time whatever the path could carry (a fixed 64 KiB moves 3 MB/s at 20 ms RTT), and a
/// controller whose sender is held by something else sees only app-limited samples and
/// never raises its estimate. So the bound follows the path's bandwidth-delay product,
/// the larger of:
/// - four congestion windows (the controller's estimate, from the first round trips on);
/// - [`DELIVERY_GAIN`] times the measured delivery rate over [`RETURN_RTTS`] round trips:
///   what the client actually takes while a loss holds its reads, with room to grow
///   (round trips, not the measured return time: that includes the time bytes wait in
///   the sender's own buffer, which grows with the bound).
///
/// The window still bounds what is on the path; the rest waits in the sender's stream
/// buffer, where an audio period (a higher priority) goes first. On a slow path the bound
/// stays small, so little console data is ever queued ahead of audio. The floor is
/// `limits.console_in_flight_with_audio` while audio is live (for paths not measured yet),
/// `limits.console_in_flight` otherwise; the ceiling is [`MAX_IN_FLIGHT_WITH_AUDIO`] while
/// audio is live, [`MAX_IN_FLIGHT`] otherwise (or the floor, if larger).
pub fn in_flight_bound(limits: &Limits, audio_live: bool, path: PathEstimate) -> u64 {
    let windows = path.window.saturating_mul(4);
    let delivered = u128::from(path.delivery_rate) * path.rtt.as_nanos() * u128::from(RETURN_RTTS)
        / 1_000_000_000;
    let delivered = u64::try_from(delivered).unwrap_or(u64::MAX);
    let need = windows.max(delivered.saturating_mul(DELIVERY_GAIN));
    let (floor, ceiling) = if audio_live {
        (
            limits.console_in_flight_with_audio,
            MAX_IN_FLIGHT_WITH_AUDIO,
        )
    } else {
        (limits.console_in_flight, MAX_IN_FLIGHT)
    };
    need.clamp(floor, ceiling.max(floor))
}

/// A frame from the client on an audio attachment (`what` names the device). `None`
/// means keep going; a listener sends no audio and its `Consumed` is ignored.
pub fn audio_frame(what: &str, frame: Option<Frame>) -> Option<End> {
    match frame {
        Some(Frame::Detach) | None => Some(End::Finish),
        Some(Frame::Input { .. }) => Some(End::refuse(
            ErrorCode::ReadOnly,
            format!(
                "this attachment listens to {what}: sending audio to the guest needs an \
                 attachment for writing (`ringcast mic`)"
            ),
        )),
        Some(Frame::Consumed { .. }) => None,
        Some(other) => Some(End::close(
            ErrorCode::ProtocolViolation,
            format!("{} is not allowed on an audio stream", other.name()),
        )),
    }
}

/// Connections a server keeps at once: in total and per client identity.
#[derive(Debug)]
pub struct Connections<K> {
    total: u32,
    per_client: std::collections::HashMap<K, u32>,
    max_total: u32,
    max_per_client: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Connections<K> {
    /// No connection yet, under `limits`.
    pub fn new(limits: &Limits) -> Self {
        Connections {
            total: 0,
            per_client: std::collections::HashMap::new(),
            max_total: limits.max_connections,
            max_per_client: limits.max_connections_per_client,
        }
    }

    /// A connection of `client` wants in: counted, or refused (then not counted).
    pub fn open(&mut self, client: &K) -> Result<(), End> {
        let mine = self.per_client.get(client).copied().unwrap_or(0);
        if self.total >= self.max_total {
            return Err(End::close(
                ErrorCode::TooManyConnections,
                format!("the server keeps at most {} connections", self.max_total),
            ));
        }
        if mine >= self.max_per_client {
            return Err(End::close(
                ErrorCode::TooManyConnections,
                format!(
                    "the server keeps at most {} connections per client identity",
                    self.max_per_client
                ),
            ));
        }
        self.total += 1;
        self.per_client.insert(client.clone(), mine + 1);
        Ok(())
    }

    /// A counted connection of `client` ended.
    pub fn close(&mut self, client: &K) {
        if let Some(n) = self.per_client.get_mut(client) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_client.remove(client);
            }
        }
    }

    /// Connections counted now.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// What a frame on a microphone attachment asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicAction {
    /// Nothing to do (a `Consumed` report, meaningless here).
    Continue,
    /// PCM for the guest's capture side: whole frames in the format `Attached` announced.
    Pcm(Bytes),
    /// The stream ends.
    End(End),
}

/// A microphone attachment (an audio device attached in `Write` mode): the client sends
/// PCM in `Input` frames, whole frames of `frame_bytes` in the format the server announced
/// in its `Attached` (the guest's input voice).
#[derive(Debug, Clone)]
pub struct MicRules {
    what: String,
    frame_bytes: usize,
}

impl MicRules {
    /// The microphone of `what` (its name, for messages) whose frames are `frame_bytes`.
    pub fn new(what: impl Into<String>, frame_bytes: usize) -> Self {
        MicRules {
            what: what.into(),
            frame_bytes: frame_bytes.max(1),
        }
    }

    /// A frame from the client (`None`: it finished its side).
    pub fn on_frame(&self, frame: Option<Frame>) -> MicAction {
        match frame {
            Some(Frame::Input { bytes }) if bytes.len() % self.frame_bytes == 0 => {
                MicAction::Pcm(bytes)
            }
            Some(Frame::Input { bytes }) => MicAction::End(End::close(
                ErrorCode::ProtocolViolation,
                format!(
                    "{} bytes of audio for {} are not whole frames of {} bytes",
                    bytes.len(),
                    self.what,
                    self.frame_bytes
                ),
            )),
            Some(Frame::Consumed { .. }) => MicAction::Continue,
            Some(Frame::Detach) | None => MicAction::End(End::Finish),
            Some(other) => MicAction::End(End::close(
                ErrorCode::ProtocolViolation,
                format!("{} is not allowed on a microphone stream", other.name()),
            )),
        }
    }
}
