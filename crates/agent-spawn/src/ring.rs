//! A bounded buffer keeping the last bytes an agent wrote to stderr.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// Default capacity: 64 KiB.
pub const STDERR_RING_CAPACITY: usize = 64 * 1024;

/// The last `capacity` bytes written to it; memory stays bounded whatever is pushed.
///
/// Clones share the same buffer.
///
/// ```
/// use agent_spawn::StderrRing;
///
/// let ring = StderrRing::new(8);
/// ring.push(b"hello ");
/// ring.push(b"world");
/// assert_eq!(ring.tail(), "lo world");
/// ```
#[derive(Debug, Clone)]
pub struct StderrRing {
    inner: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
}

impl StderrRing {
    /// A ring keeping the last `capacity` bytes.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        StderrRing {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
        }
    }

    /// Appends bytes, dropping the oldest beyond the capacity.
    pub fn push(&self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let mut buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let excess = (buf.len() + bytes.len()).saturating_sub(self.capacity);
        buf.drain(..excess);
        buf.extend(bytes);
    }

    /// The buffered bytes, oldest first.
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        let buf = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        buf.iter().copied().collect()
    }

    /// The buffered bytes as text (lossy UTF-8; a sequence cut at the front is dropped).
    #[must_use]
    pub fn tail(&self) -> String {
        let bytes = self.bytes();
        // Skip UTF-8 continuation bytes the ring cut in the middle of a character.
        let start = bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Bytes currently buffered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is buffered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most bytes it keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Default for StderrRing {
    fn default() -> Self {
        StderrRing::new(STDERR_RING_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes() {
        let r = StderrRing::new(4);
        r.push(b"ab");
        assert_eq!(r.bytes(), b"ab");
        r.push(b"cdef");
        assert_eq!(r.bytes(), b"cdef");
        r.push(b"0123456789");
        assert_eq!(r.bytes(), b"6789");
        r.push(b"x");
        assert_eq!(r.bytes(), b"789x");
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn bounded_under_a_flood() {
        let r = StderrRing::default();
        let chunk = vec![b'z'; 8192];
        for _ in 0..1000 {
            r.push(&chunk);
        }
        assert_eq!(r.len(), STDERR_RING_CAPACITY);
    }

    #[test]
    fn tail_drops_a_cut_character() {
        let r = StderrRing::new(5);
        r.push("aé€".as_bytes()); // 1 + 2 + 3 bytes; the ring keeps the last 5
        assert_eq!(r.tail(), "é€");
        let r = StderrRing::new(4);
        r.push("é€".as_bytes());
        assert_eq!(r.tail(), "€");
    }
}
