//! A microphone attachment: an audio device attached for writing. The client sends PCM in
//! the format the guest records in (announced in `Attached`), or, when it offered Opus,
//! numbered Opus packets that ringcastd decodes into that format; it goes into the device's
//! input ring, which the guest's capture voice reads. One sender per device, under the
//! device's write lock; the rules are `protocol::rules::server::MicRules`.

use super::*;
use crate::transcode::MicDecoder;
use protocol::audio::split_mic_packet;
use transport_quic::rules::server::{MicAction, MicRules};

pub(super) async fn mic(
    c: Arc<ClientConnection>,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    key: DeviceKey,
    codecs: &[codec::AudioCodec],
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
    let encoding = audio_rules::choose(codecs, handle.mic_opus_params(&key));
    let mut decoder = match encoding {
        codec::AudioEncoding::Opus(params) => match MicDecoder::new(format, params) {
            Ok(d) => Some(d),
            Err(e) => {
                let why = format!("{key}: cannot decode Opus for its input: {e}");
                return c.end(&mut send, refuse(ErrorCode::NotAttached, why)).await;
            }
        },
        codec::AudioEncoding::Pcm => None,
    };
    // Opus packets have any length; PCM comes in whole frames.
    let frame_bytes = match decoder {
        Some(_) => 1,
        None => format.frame_bytes().unwrap_or(1) as usize,
    };
    let attached = Frame::Attached {
        kind: DeviceKind::Audio,
        offset: 0,
        audio: Some(wire_format(format)),
        encoding,
    };
    if send_frame(&mut send, &attached).await.is_err() {
        return;
    }
    tracing::info!(peer = %c.peer, device = %key, rate = format.frequency, channels = format.channels, codec = encoding.codec().name(), "microphone attached");
    let rules = MicRules::new(key.to_string(), frame_bytes);
    // What went into the ring and what did not fit, said when the sender leaves.
    let (mut written, mut dropped) = (0u64, 0u64);
    let mut decoded = Vec::new();
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
            MicAction::Pcm(bytes) => {
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
                let pcm = match decoder.as_mut() {
                    None => &bytes[..],
                    Some(d) => {
                        let decoded_ok = split_mic_packet(&bytes)
                            .and_then(|(seq, packet)| d.push(seq, packet, &mut decoded));
                        if let Err(reason) = decoded_ok {
                            let code = ErrorCode::ProtocolViolation;
                            break End::Close { code, reason };
                        }
                        &decoded[..]
                    }
                };
                if pcm.is_empty() {
                    continue;
                }
                match handle.write_mic(&key, pcm) {
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
    let opus = decoder.map(|d| d.stats());
    tracing::info!(peer = %c.peer, device = %key, written, dropped, ?opus, "microphone detached");
    c.end(&mut send, end).await
}
