//! The buffers of the write pipeline: what the reader fills (the qcow2 decoder among others)
//! and the writer writes.

/// Bytes read and written per step.
pub const CHUNK: usize = 4 << 20;
/// Alignment of buffers, offsets and lengths for `O_DIRECT`.
pub(crate) const ALIGN: usize = 4096;

/// A [`CHUNK`]-sized buffer aligned for `O_DIRECT`.
pub(crate) struct Chunk {
    v: Vec<u8>,
    start: usize,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chunk")
    }
}

impl Chunk {
    pub(crate) fn new() -> Chunk {
        let v = vec![0u8; CHUNK + ALIGN];
        let start = v.as_ptr().align_offset(ALIGN);
        Chunk { v, start }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.v[self.start..self.start + CHUNK]
    }
}

impl std::ops::DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.start..self.start + CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_for_direct_io() {
        let mut c = Chunk::new();
        assert_eq!(c.len(), CHUNK);
        assert_eq!(c.as_ptr().align_offset(ALIGN), 0);
        c[CHUNK - 1] = 1;
    }
}
