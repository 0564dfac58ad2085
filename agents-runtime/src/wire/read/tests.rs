//! The reader against every split, violation and limit.
use super::*;

/// A masked client frame, as a browser sends it.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn budget(limit: usize) -> Arc<InputBudget> {
    Arc::new(InputBudget::new(usize::MAX, std::time::Duration::from_secs(30), limit, 4096))
}

fn reader() -> Reader {
    Reader::new(&[], budget(1 << 20))
}

/// Feeds `bytes` `step` at a time, collecting what comes out.
fn read_all(reader: &mut Reader, bytes: &[u8], step: usize) -> Result<Vec<Incoming>, ReadError> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        reader.feed(chunk);
        while let Some(incoming) = reader.next()? {
            out.push(incoming);
        }
    }
    Ok(out)
}

#[test]
fn messages_of_every_length_class_survive_any_split() {
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for (i, len) in [0usize, 1, 125, 126, 127, 65_535, 65_536, 100_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|j| b'a' + (j % 26) as u8).collect();
        if i % 2 == 0 {
            stream.extend(frame(true, OP_TEXT, &bytes));
            want.push(Incoming::Text(String::from_utf8(bytes).unwrap().into()));
        } else {
            stream.extend(frame(true, OP_BINARY, &bytes));
            want.push(Incoming::Binary(bytes.into()));
        }
    }
    for step in [1, 2, 3, 7, 13, 1000, usize::MAX] {
        let mut reader = reader();
        assert_eq!(read_all(&mut reader, &stream, step).unwrap(), want, "step {step}");
        assert_eq!(reader.buf.capacity(), 0, "an idle reader holds no buffer");
    }
}

#[test]
fn fragments_join_and_control_frames_may_come_between() {
    let mut stream = frame(false, OP_TEXT, "héllo, ".as_bytes());
    stream.extend(frame(true, OP_PING, b"are you there"));
    stream.extend(frame(false, OP_CONTINUATION, &"wör".as_bytes()[..2]));
    stream.extend(frame(true, OP_CONTINUATION, &"wörld".as_bytes()[2..]));
    stream.extend(frame(true, OP_CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
    let got = read_all(&mut reader(), &stream, 5).unwrap();
    assert_eq!(
        got,
        [
            Incoming::Ping(Bytes::from_static(b"are you there")),
            Incoming::Text("héllo, wörld".into()),
            Incoming::Close(Some((1000, "bye".into()))),
        ]
    );
}

#[test]
fn every_violation_has_its_answer() {
    let unmasked = {
        let mut f = frame(true, OP_TEXT, b"hi");
        f[1] &= 0x7F;
        f
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (unmasked, "masked"),
        (frame(true, 0x3, b"x"), "unknown opcode"),
        (frame(true, 0x1 | 0x40, b"x"), "reserved bits"),
        (frame(false, OP_PING, b"x"), "control frames"),
        (frame(true, OP_PING, &[0; 126]), "control frames"),
        (frame(true, OP_CONTINUATION, b"x"), "continuation"),
        ([frame(false, OP_TEXT, b"a"), frame(true, OP_BINARY, b"b")].concat(), "new message"),
        (frame(true, OP_CLOSE, &[3]), "1-byte"),
        (frame(true, OP_CLOSE, &1005u16.to_be_bytes()), "close code"),
        (frame(true, OP_CLOSE, &999u16.to_be_bytes()), "close code"),
    ];
    for (bytes, why) in cases {
        match read_all(&mut reader(), &bytes, usize::MAX) {
            Err(ReadError::Protocol(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    let bad_text = frame(true, OP_TEXT, &[0xff, 0xfe]);
    assert!(matches!(read_all(&mut reader(), &bad_text, 1), Err(ReadError::Utf8)));
    let bad_reason = frame(true, OP_CLOSE, &[0x03, 0xE8, 0xff]);
    assert!(matches!(read_all(&mut reader(), &bad_reason, 1), Err(ReadError::Utf8)));
}

#[test]
fn sizes_over_the_limit_are_refused_before_they_are_read() {
    let mut small = Reader::new(&[], budget(100));
    // Only the header has arrived: refused already.
    let header = &frame(true, OP_BINARY, &[0; 101])[..8];
    assert!(matches!(read_all(&mut small, header, usize::MAX), Err(ReadError::TooBig(101))));
    let mut small = Reader::new(&[], budget(100));
    let parts = [frame(false, OP_BINARY, &[0; 60]), frame(true, OP_CONTINUATION, &[0; 60])];
    assert!(matches!(read_all(&mut small, &parts.concat(), 7), Err(ReadError::TooBig(120))));
    let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        read_all(&mut reader(), &huge, usize::MAX),
        Err(ReadError::Protocol(message)) if message.contains("top bit")
    ));
}

#[test]
fn a_frame_only_announced_costs_what_was_sent() {
    let mut reader = reader();
    let header = &frame(true, OP_BINARY, &[0; 65_535])[..8];
    assert!(read_all(&mut reader, header, usize::MAX).unwrap().is_empty());
    assert!(reader.buf.capacity() < 1024, "{} bytes held", reader.buf.capacity());
}

/// What a refused frame leaves to skip: its bytes not read yet, whatever part of it was
/// read; the frame after it is read whole again. A refused fragment takes the rest of its
/// message with it.
#[test]
fn a_refused_frame_is_dropped_and_what_follows_it_is_read() {
    let big = frame(true, OP_BINARY, &[0; 101]);
    let close = frame(true, OP_CLOSE, &[0x03, 0xF1]);
    for arrived in [4, 8, 50, big.len()] {
        let mut small = Reader::new(&[], budget(100));
        small.feed(&big[..arrived]);
        assert!(matches!(small.next(), Err(ReadError::TooBig(101))));
        assert_eq!(small.drop_refused(), Some((big.len() - arrived) as u64), "{arrived}");
        assert!(small.is_idle());
        small.feed(&close);
        assert!(matches!(small.next(), Ok(Some(Incoming::Close(Some((1009, _)))))));
    }
    // A message in fragments: the refused one and the ones after it are dropped, up to
    // the last.
    let mut small = Reader::new(&[], budget(100));
    let parts = [
        frame(false, OP_BINARY, &[0; 60]),
        frame(false, OP_CONTINUATION, &[0; 60]),
        frame(false, OP_CONTINUATION, &[0; 60]),
        frame(true, OP_CONTINUATION, &[0; 10]),
        close.clone(),
    ];
    small.feed(&parts.concat());
    assert!(matches!(small.next(), Err(ReadError::TooBig(120))));
    assert_eq!(small.drop_refused(), Some(0));
    assert!(!small.is_idle(), "the message's last fragment is still to come");
    assert!(matches!(small.next(), Ok(Some(Incoming::Close(Some((1009, _)))))));
    assert!(small.is_idle());
}

#[test]
fn a_fragment_over_the_limit_is_refused_from_its_header() {
    let mut small = Reader::new(&[], budget(100));
    let first = frame(false, OP_BINARY, &[0; 60]);
    let second = &frame(true, OP_CONTINUATION, &[0; 60])[..6];
    let bytes = [first, second.to_vec()].concat();
    assert!(matches!(read_all(&mut small, &bytes, usize::MAX), Err(ReadError::TooBig(120))));
}

#[test]
fn bytes_sent_with_the_upgrade_request_are_read_first() {
    let early = frame(true, OP_TEXT, b"early");
    let mut reader = Reader::new(&early, budget(1 << 20));
    assert_eq!(reader.next().unwrap(), Some(Incoming::Text("early".into())));
}

#[test]
fn unmasking_matches_the_rfc_definition() {
    let mask = [1, 2, 3, 4];
    for len in 0..40 {
        let original: Vec<u8> = (0..len as u8).collect();
        let mut bytes = original.clone();
        unmask(&mut bytes, mask);
        let want: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(bytes, want, "length {len}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::{Incoming, OP_BINARY, OP_CONTINUATION, OP_TEXT, frame, reader};

    /// A message and how many fragments it is sent in.
    fn message() -> impl Strategy<Value = (Incoming, Vec<u8>, bool, usize)> {
        let text = ".{0,200}".prop_map(|s: String| {
            let bytes = s.clone().into_bytes();
            (Incoming::Text(s.into()), bytes, true)
        });
        let binary = proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|b| (Incoming::Binary(b.clone().into()), b, false));
        (prop_oneof![text, binary], 1..4usize).prop_map(|((m, b, t), n)| (m, b, t, n))
    }

    proptest! {
        /// Whatever a client sends, the reader answers (a message, more to read, or an
        /// error) and never panics.
        #[test]
        fn any_bytes_in_any_chunks_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            step in 1..64usize,
        ) {
            let mut reader = reader();
            'feed: for chunk in bytes.chunks(step) {
                reader.feed(chunk);
                loop {
                    match reader.next() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
        }

        /// Masked messages, fragmented and split anywhere, read back as they were sent.
        #[test]
        fn fragmented_messages_read_back_whole(
            messages in proptest::collection::vec(message(), 1..8),
            step in 1..97usize,
        ) {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (incoming, bytes, text, fragments) in messages {
                let size = bytes.len().div_ceil(fragments).max(1);
                let parts: Vec<&[u8]> = if bytes.is_empty() { vec![&[]] } else { bytes.chunks(size).collect() };
                for (i, part) in parts.iter().enumerate() {
                    let opcode = match (i, text) { (0, true) => OP_TEXT, (0, false) => OP_BINARY, _ => OP_CONTINUATION };
                    stream.extend(frame(i + 1 == parts.len(), opcode, part));
                }
                want.push(incoming);
            }
            let mut reader = reader();
            prop_assert_eq!(super::read_all(&mut reader, &stream, step).expect("valid frames"), want);
        }
    }
}
