//! Logging what clients cause without letting them fill the disk: each instance logs at most
//! [`LINES_PER_SECOND`] such lines a second (the lines it drops are counted in the next one),
//! and a line quotes at most [`MAX_QUOTED`] bytes of any text a client chose.

use std::borrow::Cow;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Most log lines an instance writes per second about errors a client can cause.
pub(crate) const LINES_PER_SECOND: u32 = 10;

/// Most bytes of client-chosen text (an error that quotes an argument, a method name) one log
/// line quotes.
pub(crate) const MAX_QUOTED: usize = 256;

/// One instance's allowance of log lines.
///
/// Its window is allocated on the first line: every instance carries a budget, few ever log.
#[derive(Default)]
pub(crate) struct LogBudget(OnceLock<Box<Mutex<Window>>>);

#[derive(Default)]
struct Window {
    start: Option<Instant>,
    lines: u32,
    dropped: u32,
}

impl LogBudget {
    /// Whether one more line may be written now: `Some(n)`, with `n` the lines dropped since
    /// the last one written, or `None` (the line is dropped and counted).
    pub(crate) fn take(&self) -> Option<u64> {
        let mut window = lock(self.0.get_or_init(Box::default));
        let now = Instant::now();
        let fresh = window.start.is_none_or(|start| now - start >= Duration::from_secs(1));
        if fresh {
            window.start = Some(now);
            window.lines = 0;
        }
        if window.lines >= LINES_PER_SECOND {
            window.dropped = window.dropped.saturating_add(1);
            return None;
        }
        window.lines += 1;
        Some(u64::from(std::mem::take(&mut window.dropped)))
    }
}

/// `text` cut to [`MAX_QUOTED`] bytes at a character boundary, saying how long it was.
pub(crate) fn clip(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTED {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
}

/// `text` with its middle cut out past [`MAX_QUOTED`] bytes, keeping its start and its end
/// (where a decoding error says what was expected), and saying how long it was: an error
/// that quotes a client's megabyte does not send it back.
pub(crate) fn clip_middle(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTED {
        return Cow::Borrowed(text);
    }
    let mut head = MAX_QUOTED * 3 / 4;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - MAX_QUOTED / 4;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    Cow::Owned(format!("{} … {} ({} bytes in all)", &text[..head], &text[tail..], text.len()))
}

#[cfg(test)]
mod tests {
    use super::{LINES_PER_SECOND, LogBudget, MAX_QUOTED, clip, clip_middle};

    #[test]
    fn a_long_error_keeps_its_start_and_its_end() {
        let text = format!("invalid type: string \"{}é\", expected f64", "x".repeat(5000));
        let clipped = clip_middle(&text);
        assert!(clipped.len() < MAX_QUOTED + 40, "{clipped}");
        assert!(clipped.starts_with("invalid type: string \"xxx"), "{clipped}");
        assert!(clipped.ends_with(&format!("é\", expected f64 ({} bytes in all)", text.len())));
        assert_eq!(clip_middle("short"), "short");
    }

    #[test]
    fn a_burst_is_cut_to_the_allowance_and_the_rest_counted() {
        let budget = LogBudget::default();
        let written = (0..1000).filter_map(|_| budget.take()).count();
        assert_eq!(written, LINES_PER_SECOND as usize);
        assert!(budget.take().is_none());
    }

    #[test]
    fn long_text_is_clipped_at_a_character_boundary() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000);
        let clipped = clip(&long);
        assert!(clipped.ends_with("… (2000 bytes in all)"), "{clipped}");
        assert!(clipped.len() < MAX_QUOTED + 32);
    }
}
