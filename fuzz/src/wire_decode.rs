//! Frames from hostile bytes: decoding arbitrary bytes never panics, and whatever decodes
//! encodes back to a frame that decodes to the same value, whole or fed in pieces.

use protocol::codec::{decode_datagram, Frame, FrameBuffer, HEADER_LEN};

/// One fuzz input.
pub fn run(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = Frame::decode(rest) {
        assert!(used >= HEADER_LEN && used <= rest.len());
        let bytes = frame.to_bytes().expect("a decoded frame re-encodes");
        let (again, n) = Frame::decode(&bytes)
            .expect("re-encoded frame decodes")
            .expect("re-encoded frame is complete");
        assert_eq!(n, bytes.len());
        assert_eq!(again, frame);
        rest = &rest[used..];
    }
    let mut fb = FrameBuffer::new();
    for piece in data.chunks(7) {
        fb.push(piece);
        while let Ok(Some(_)) = fb.next_frame() {}
    }
    let _ = decode_datagram(data);
}
