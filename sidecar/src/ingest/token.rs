//! What an io_uring completion is for: its user data, packed as a kind in the top byte and
//! an id (a registration or an attachment) in the other 56 bits.

/// The purpose of a submitted io_uring operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// The registration socket is readable.
    Listener,
    /// ringcastd is stopping.
    Stop,
    /// A registration connection (QEMU's) is readable or hung up.
    Registration(u64),
    /// An attachment's "data available" doorbell rang.
    OutData(u64),
    /// An attachment's input ring has space again.
    InSpace(u64),
    /// A spool write of an attachment completed.
    Write(u64),
    /// A registration connection's deadline passed.
    Deadline,
}

const ID_BITS: u32 = 56;
const ID_MASK: u64 = (1 << ID_BITS) - 1;

impl Token {
    /// The io_uring user data. Ids are below 2^56 (one per registration or attachment).
    pub(super) fn encode(self) -> u64 {
        let (kind, id) = match self {
            Token::Listener => (1, 0),
            Token::Stop => (2, 0),
            Token::Registration(id) => (3, id),
            Token::OutData(id) => (4, id),
            Token::InSpace(id) => (5, id),
            Token::Write(id) => (6, id),
            Token::Deadline => (7, 0),
        };
        (kind << ID_BITS) | (id & ID_MASK)
    }

    /// The token of a completion's user data; `None` for one ringcastd never submitted.
    pub(super) fn decode(user_data: u64) -> Option<Token> {
        let id = user_data & ID_MASK;
        Some(match user_data >> ID_BITS {
            1 => Token::Listener,
            2 => Token::Stop,
            3 => Token::Registration(id),
            4 => Token::OutData(id),
            5 => Token::InSpace(id),
            6 => Token::Write(id),
            7 => Token::Deadline,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_survives_its_user_data() {
        for t in [
            Token::Listener,
            Token::Stop,
            Token::Registration(7),
            Token::OutData(ID_MASK),
            Token::InSpace(1),
            Token::Write(123_456),
            Token::Deadline,
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(9 << ID_BITS), None);
    }
}
