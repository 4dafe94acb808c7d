//! The audio entry points (`QbpAudioOps`): one output voice and one input voice per device.

use std::ffi::{c_char, c_int, c_void};

use shm_ring::handover::AudioFormat;

use super::{close, instance, open, with_instance};
use crate::abi::{QbpAudio, QbpAudioFormat, QbpAudioOps, QbpInstanceInfo, QbpTableHeader};
use crate::ffi::{guard, libc_eio};
use crate::host::{self, Level};
use crate::instance::Instance;

unsafe extern "C" fn audio_open(
    info: *const QbpInstanceInfo,
    err: *mut c_char,
    err_len: usize,
) -> *mut QbpAudio {
    // SAFETY: QEMU passes a valid info and an error buffer of err_len bytes.
    unsafe { open(info, err, err_len, Instance::open_audio) }
}

unsafe extern "C" fn audio_close(audio: *mut QbpAudio) {
    // SAFETY: the pointer came from audio_open; QEMU closes it once.
    unsafe { close(audio) }
}

fn audio_format(f: &QbpAudioFormat) -> AudioFormat {
    AudioFormat {
        frequency: f.frequency,
        channels: f.channels,
        sample_format: f.sample_format,
        big_endian: f.big_endian != 0,
    }
}

/// A voice's `open` entry point: 0, or -EINVAL when `open_voice` refuses the format (said
/// in QEMU's log as "`what`: why"), or -EIO.
///
/// # Safety
/// `audio` is a live instance and `format` NULL or valid for the call (ABI contract).
unsafe fn voice_open(
    audio: *mut QbpAudio,
    format: *const QbpAudioFormat,
    what: &str,
    open_voice: impl FnOnce(&Instance, AudioFormat) -> Result<(), String>,
) -> c_int {
    guard(-libc_eio(), || {
        // SAFETY: guaranteed by the caller.
        let (Some(inst), Some(f)) = (unsafe { instance(audio) }, unsafe { format.as_ref() }) else {
            return -libc_eio();
        };
        match inst.guarded(
            || open_voice(inst, audio_format(f)),
            || Err("the device is disabled after an internal error".into()),
        ) {
            Ok(()) => 0,
            Err(e) => {
                if let Some(h) = host::get() {
                    h.log(Level::Error, &format!("{what}: {e}"));
                }
                -rustix::io::Errno::INVAL.raw_os_error()
            }
        }
    })
}

unsafe extern "C" fn audio_out_open(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int {
    // SAFETY: a live instance and a valid format (ABI contract).
    unsafe { voice_open(audio, format, "audio output", Instance::audio_out_open) }
}

unsafe extern "C" fn audio_out_close(audio: *mut QbpAudio) {
    // SAFETY: a live instance (ABI contract).
    unsafe { with_instance(audio, Instance::audio_out_close) }
}

unsafe extern "C" fn audio_out_enable(audio: *mut QbpAudio, enable: bool) {
    // SAFETY: a live instance (ABI contract).
    unsafe { with_instance(audio, |i| i.audio_out_enable(enable)) }
}

unsafe extern "C" fn audio_out_write(
    audio: *mut QbpAudio,
    buf: *const c_void,
    len: usize,
) -> usize {
    guard(len, || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { instance(audio) }) else {
            return len;
        };
        if buf.is_null() || len == 0 {
            return len;
        }
        // SAFETY: QEMU passes `len` readable bytes at `buf`.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        inst.guarded(
            || inst.audio_out_write(data),
            || {
                inst.discard(1);
                len
            },
        )
    })
}

unsafe extern "C" fn audio_in_open(audio: *mut QbpAudio, format: *const QbpAudioFormat) -> c_int {
    // SAFETY: a live instance and a valid format (ABI contract).
    unsafe { voice_open(audio, format, "audio input", Instance::audio_in_open) }
}

unsafe extern "C" fn audio_in_close(audio: *mut QbpAudio) {
    // SAFETY: a live instance (ABI contract).
    unsafe { with_instance(audio, Instance::audio_in_close) }
}

unsafe extern "C" fn audio_in_enable(audio: *mut QbpAudio, enable: bool) {
    // SAFETY: a live instance (ABI contract).
    unsafe { with_instance(audio, |i| i.audio_in_enable(enable)) }
}

unsafe extern "C" fn audio_in_read(audio: *mut QbpAudio, buf: *mut c_void, len: usize) -> usize {
    // On an internal error deliver nothing: QEMU pads the period with silence itself.
    guard(0, || {
        // SAFETY: a live instance (ABI contract).
        let Some(inst) = (unsafe { instance(audio) }) else {
            return 0;
        };
        if buf.is_null() || len == 0 {
            return 0;
        }
        // SAFETY: QEMU passes `len` writable bytes at `buf`, not otherwise referenced
        // during the call.
        let data = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        inst.guarded(|| inst.audio_in_read(data), || 0)
    })
}

pub(crate) static AUDIO_OPS: QbpAudioOps = QbpAudioOps {
    header: QbpTableHeader::for_table::<QbpAudioOps>(),
    open: Some(audio_open),
    close: Some(audio_close),
    out_open: Some(audio_out_open),
    out_close: Some(audio_out_close),
    out_enable: Some(audio_out_enable),
    out_write: Some(audio_out_write),
    in_open: Some(audio_in_open),
    in_close: Some(audio_in_close),
    in_enable: Some(audio_in_enable),
    in_read: Some(audio_in_read),
};
