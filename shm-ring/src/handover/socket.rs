//! One message and its descriptors over a `SOCK_SEQPACKET` socket (SCM_RIGHTS).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{MAX_FDS, MAX_MESSAGE};
use crate::error::RingError;

/// Sends one message with descriptors attached. Never blocks on a non-blocking socket
/// (returns the would-block error instead).
pub fn send_with_fds(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), RingError> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(RingError::BadMessage("too many descriptors"));
    }
    let sent = sendmsg(sock, &[IoSlice::new(bytes)], &mut cmsg, SendFlags::NOSIGNAL)
        .map_err(|e| RingError::io("sendmsg", e))?;
    if sent != bytes.len() {
        return Err(RingError::BadMessage("message truncated on send"));
    }
    Ok(())
}

/// One received message and the descriptors that came with it.
pub type Received = (Vec<u8>, Vec<OwnedFd>);

/// Receives one message and the descriptors that came with it. Returns `Ok(None)` on an
/// orderly shutdown of the peer.
pub fn recv_with_fds(sock: impl AsFd) -> Result<Option<Received>, RingError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| RingError::io("recvmsg", e))?;
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC)
        || msg.flags.contains(rustix::net::ReturnFlags::TRUNC)
    {
        return Err(RingError::BadMessage("message or descriptors truncated"));
    }
    if msg.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(msg.bytes);
    Ok(Some((buf, fds)))
}

// Sockets and descriptors: not under Miri.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_with_the_message() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let bell = crate::Doorbell::new().unwrap();
        send_with_fds(&a, b"hi", &[bell.as_fd(), bell.as_fd()]).unwrap();
        let (msg, fds) = recv_with_fds(&b).unwrap().unwrap();
        assert_eq!(msg, b"hi");
        assert_eq!(fds.len(), 2);
        let received = crate::Doorbell::from_fd(fds.into_iter().next().unwrap()).unwrap();
        received.ring();
        assert!(bell.drain());
        drop(a);
        assert!(recv_with_fds(&b).unwrap().is_none());
    }
}
