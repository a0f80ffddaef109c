//! Mutations of encoded protobuf messages, for fuzzing the services over the wire: each takes
//! a valid request's bytes and returns the body to send, framed or deliberately misframed.
//! Seeded by the caller, so every run can be replayed.

use rand::{Rng, RngCore, rngs::StdRng};

use crate::raw::framed;

/// The ways a message is mangled; [`Mutation::ALL`] lists them for an even pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Sent as encoded.
    None,
    /// One to eight bits flipped anywhere.
    BitFlips,
    /// Cut at a random length.
    Truncated,
    /// The message twice over: every field repeated (proto merge semantics).
    Duplicated,
    /// A field number the schema does not have, with a valid payload.
    UnknownField,
    /// A known field number (1 to 10) with a wire type it does not have.
    WrongWireType,
    /// A length-delimited field claiming far more bytes than follow.
    HugeLength,
    /// A frame header claiming far more bytes than follow.
    HugeFrame,
    /// A random run of bytes spliced in at a random place.
    Spliced,
    /// Random bytes in place of the message.
    Random,
}

impl Mutation {
    /// Every mutation.
    pub const ALL: [Mutation; 10] = [
        Mutation::None,
        Mutation::BitFlips,
        Mutation::Truncated,
        Mutation::Duplicated,
        Mutation::UnknownField,
        Mutation::WrongWireType,
        Mutation::HugeLength,
        Mutation::HugeFrame,
        Mutation::Spliced,
        Mutation::Random,
    ];

    /// A mutation picked at random.
    pub fn pick(rng: &mut StdRng) -> Self {
        Self::ALL[rng.random_range(0..Self::ALL.len())]
    }

    /// The request body: `message` mangled this way, framed (except where the frame is what
    /// is mangled).
    pub fn apply(self, message: &[u8], rng: &mut StdRng) -> Vec<u8> {
        let mut message = message.to_vec();
        match self {
            Mutation::None => {}
            Mutation::BitFlips => {
                if !message.is_empty() {
                    for _ in 0..rng.random_range(1..=8) {
                        let at = rng.random_range(0..message.len());
                        message[at] ^= 1 << rng.random_range(0..8);
                    }
                }
            }
            Mutation::Truncated => message.truncate(rng.random_range(0..=message.len())),
            Mutation::Duplicated => message.extend_from_slice(&message.clone()),
            Mutation::UnknownField => {
                let field = rng.random_range(11..(1 << 29));
                unknown_field(&mut message, field, rng);
            }
            Mutation::WrongWireType => wrong_wire_type(&mut message, rng),
            Mutation::HugeLength => {
                varint(&mut message, tag(rng.random_range(1..=10), 2));
                varint(&mut message, rng.random_range(1 << 20..=u64::MAX));
                message.extend_from_slice(&[b'x'; 16]);
            }
            Mutation::HugeFrame => {
                let mut body = vec![0];
                body.extend_from_slice(&rng.random_range(1 << 20..=u32::MAX).to_be_bytes());
                body.extend_from_slice(&message);
                return body;
            }
            Mutation::Spliced => {
                let at = rng.random_range(0..=message.len());
                let run = random_bytes(rng, 1, 24);
                message.splice(at..at, run);
            }
            Mutation::Random => message = random_bytes(rng, 0, 200),
        }
        framed(&message)
    }
}

/// `min..max` random bytes.
pub fn random_bytes(rng: &mut StdRng, min: usize, max: usize) -> Vec<u8> {
    let mut bytes = vec![0; rng.random_range(min..max)];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn tag(field: u64, wire_type: u64) -> u64 {
    field << 3 | wire_type
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends field `field` with a random wire type and a well-formed payload for it.
fn unknown_field(out: &mut Vec<u8>, field: u64, rng: &mut StdRng) {
    let wire_type = [0, 1, 2, 5][rng.random_range(0..4)];
    field_of_type(out, field, wire_type, rng);
}

/// Appends a known field number with a payload of some wire type: right for some fields,
/// wrong for most (a string sent as a varint, a message as a fixed32, a group start).
fn wrong_wire_type(out: &mut Vec<u8>, rng: &mut StdRng) {
    let wire_type = [0, 1, 3, 5][rng.random_range(0..4)];
    field_of_type(out, rng.random_range(1..=10), wire_type, rng);
}

/// Appends field `field` of `wire_type` with a random payload of that type; a group start
/// (3) is left unclosed (proto2's deprecated groups).
fn field_of_type(out: &mut Vec<u8>, field: u64, wire_type: u64, rng: &mut StdRng) {
    varint(out, tag(field, wire_type));
    match wire_type {
        0 => varint(out, rng.next_u64()),
        1 => out.extend_from_slice(&rng.next_u64().to_le_bytes()),
        2 => {
            let payload = random_bytes(rng, 0, 40);
            varint(out, payload.len() as u64);
            out.extend_from_slice(&payload);
        }
        5 => out.extend_from_slice(&rng.next_u32().to_le_bytes()),
        _ => {}
    }
}
