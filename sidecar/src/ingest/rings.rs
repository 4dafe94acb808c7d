//! The rings of a registration, mapped and validated in the fd order `handover`
//! documents.

use super::*;

/// The rings and doorbells of one registration, mapped and checked.
pub(super) struct OpenedRings {
    /// The output ring (console bytes or audio records), as its consumer.
    pub(super) ring: Ring,
    /// "Data available" doorbell of the output ring.
    pub(super) out_data: Doorbell,
    /// "Space available" doorbell of the output ring (consoles: backpressure).
    pub(super) out_space: Option<Doorbell>,
    /// "Space available" doorbell of the input ring (consoles).
    pub(super) in_space: Option<Doorbell>,
    /// The input ring's producer side, for clients typing into the console.
    pub(super) input: Option<InputSide>,
    /// The output ring's capacity in bytes.
    pub(super) capacity: u64,
}

/// Maps and validates the rings of a description, in the fd order `handover` documents.
pub(super) fn open_rings(
    desc: &DeviceDescription,
    fds: Vec<OwnedFd>,
) -> Result<OpenedRings, shm_ring::RingError> {
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or(shm_ring::RingError::BadMessage("missing descriptor"))
    };
    match desc.kind {
        handover::DeviceKind::Console => {
            let out = Arc::new(RingMemory::open(next()?, RingKind::Bytes)?);
            let out_data = Doorbell::from_fd(next()?)?;
            let out_space = Doorbell::from_fd(next()?)?;
            let inp = Arc::new(RingMemory::open(next()?, RingKind::Bytes)?);
            let in_data = Doorbell::from_fd(next()?)?;
            let in_space = Doorbell::from_fd(next()?)?;
            let capacity = out.geometry().capacity;
            let rx = ByteConsumer::new(out)?;
            let tx = ByteProducer::new(inp)?;
            Ok(OpenedRings {
                ring: Ring::Console(rx),
                out_data,
                out_space: Some(out_space),
                in_space: Some(in_space),
                input: Some(InputSide {
                    producer: tx,
                    data_bell: Some(in_data),
                }),
                capacity,
            })
        }
        handover::DeviceKind::Audio => {
            let out = Arc::new(RingMemory::open(next()?, RingKind::Records)?);
            let out_data = Doorbell::from_fd(next()?)?;
            let capacity = out.geometry().capacity;
            let rx = RecordConsumer::new(out)?;
            let input = match desc.audio_in {
                Some(_) => {
                    let inp = Arc::new(RingMemory::open(next()?, RingKind::Bytes)?);
                    Some(InputSide {
                        producer: ByteProducer::new(inp)?,
                        data_bell: None,
                    })
                }
                None => None,
            };
            Ok(OpenedRings {
                ring: Ring::Audio {
                    rx,
                    payload: Vec::new(),
                    next_seq: None,
                },
                out_data,
                out_space: None,
                in_space: None,
                input,
                capacity,
            })
        }
    }
}
