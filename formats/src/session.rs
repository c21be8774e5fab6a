//! Session tags on frames (docs/PROTOCOL.md, "Authenticated connections"):
//! after the handshake every frame's payload is its message followed by the
//! 16-byte tag of `ddc_auth::handshake::Session`. The node, the node-to-node
//! connections and the client all seal and open frames with these two
//! functions.

use ddc_auth::handshake::{HandshakeError, Session, TAG_BYTES};

use crate::frame::{encode_header, FRAME_HEADER_BYTES};

/// Tag the frame in `buf[start..]` (header then message) in place: append the
/// message's tag and rewrite the header so its length and CRC cover both.
pub fn seal_frame(session: &mut Session, buf: &mut Vec<u8>, start: usize) {
    assert!(buf.len() >= start + FRAME_HEADER_BYTES, "seal_frame needs a whole frame");
    let tag = session.seal(&buf[start + FRAME_HEADER_BYTES..]);
    buf.extend_from_slice(&tag);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    encode_header(&buf[start + FRAME_HEADER_BYTES..], &mut header);
    buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header);
}

/// Check the tag at the end of a received frame's payload and strip it,
/// leaving the message. A payload shorter than a tag fails like a bad tag.
pub fn open_payload(session: &mut Session, payload: &mut Vec<u8>) -> Result<(), HandshakeError> {
    let Some(at) = payload.len().checked_sub(TAG_BYTES) else {
        return Err(HandshakeError::BadTag { sequence: session.frames_received() });
    };
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&payload[at..]);
    session.open(&payload[..at], &tag)?;
    payload.truncate(at);
    Ok(())
}

#[cfg(test)]
mod tests {
    use ddc_auth::account::Keypair;
    use ddc_auth::handshake::{ClientHandshake, NodeHandshake};

    use super::*;
    use crate::frame::{decode_frame, encode_frame_into};

    #[test]
    fn sealed_frames_open_once_and_in_order() {
        let (client, node) = (Keypair::generate(), Keypair::generate());
        let (c, hello) = ClientHandshake::start();
        let (n, node_hello) = NodeHandshake::answer(&hello, &node).unwrap();
        let (auth, _, mut cs) = c.finish(&node_hello, &client, None).unwrap();
        let (_, mut ns) = n.finish(&auth).unwrap();
        // A frame that does not start at 0 in its buffer (as the node's response buffers).
        let mut buf = vec![9u8; 5];
        encode_frame_into(b"hello", &mut buf);
        seal_frame(&mut cs, &mut buf, 5);
        let (payload, _) = decode_frame(&buf[5..], 1 << 20).unwrap().unwrap();
        let mut payload = payload.to_vec();
        let replay = payload.clone();
        open_payload(&mut ns, &mut payload).unwrap();
        assert_eq!(payload, b"hello");
        assert!(open_payload(&mut ns, &mut replay.clone()).is_err(), "a replayed frame opened");
        assert!(open_payload(&mut ns, &mut vec![1, 2, 3]).is_err(), "a short payload opened");
    }
}
