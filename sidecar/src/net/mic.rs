//! A microphone attachment: an audio device attached for writing. The client sends PCM in
//! the format the guest records in (announced in `Attached`); it goes into the device's
//! input ring, which the guest's capture voice reads. One sender per device, under the
//! device's write lock; the rules are `protocol::rules::server::MicRules`.

use super::*;
use transport_quic::rules::server::{MicAction, MicRules};

pub(super) async fn mic(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    key: DeviceKey,
) {
    let refuse = |code, message| End::Refuse { code, message };
    let busy = lock(&c.shared.writers)
        .acquire(key.clone(), c.peer.to_string())
        .err()
        .map(|holder| {
            tracing::info!(peer = %c.peer, device = %key, %holder, "microphone busy");
            format!("{key} already takes audio from another client")
        });
    if let Some(msg) = busy {
        return c.end(&mut send, refuse(ErrorCode::WriterBusy, msg)).await;
    }
    let _lock = WriteLock {
        shared: c.shared.clone(),
        key: key.clone(),
    };
    let handle = &c.shared.handle;
    let format = match handle.mic_format(&key) {
        Ok(f) => f,
        Err(e) => {
            return c
                .end(&mut send, refuse(ErrorCode::NotAttached, e.to_string()))
                .await
        }
    };
    let frame_bytes = format.frame_bytes().unwrap_or(1) as usize;
    let attached = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: Some(wire_format(format)),
        encoding: codec::AudioEncoding::Pcm,
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    tracing::info!(peer = %c.peer, device = %key, rate = format.frequency, channels = format.channels, "microphone attached");
    let rules = MicRules::new(key.to_string(), frame_bytes);
    // What went into the ring and what did not fit, said when the sender leaves.
    let (mut written, mut dropped) = (0u64, 0u64);
    let end = loop {
        let frame = match reader.next().await {
            Ok(f) => f,
            Err(e) => {
                tracing::info!(peer = %c.peer, device = %key, written, dropped, "microphone detached");
                return c.refuse(e);
            }
        };
        match rules.on_frame(frame) {
            MicAction::Continue => {}
            MicAction::Pcm(pcm) => {
                // A QEMU that registered again (restarted, reconnected) may record in
                // another format: the client must learn it before sending more.
                match handle.mic_format(&key) {
                    Ok(f) if f == format => {}
                    Ok(_) => {
                        let why = format!("{key} records in another format since this attachment began (its QEMU restarted): attach again");
                        break refuse(ErrorCode::NotAttached, why);
                    }
                    Err(e) => break refuse(ErrorCode::NotAttached, e.to_string()),
                }
                match handle.write_mic(&key, &pcm) {
                    Ok(w) => {
                        written += w.written as u64;
                        dropped += w.dropped as u64;
                    }
                    Err(e) => break refuse(ErrorCode::NotAttached, e.to_string()),
                }
            }
            MicAction::End(end) => break end,
        }
    };
    tracing::info!(peer = %c.peer, device = %key, written, dropped, "microphone detached");
    c.end(&mut send, end).await
}
