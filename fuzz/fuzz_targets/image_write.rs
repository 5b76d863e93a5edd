//! The write pipeline decodes images uploaded by users (the qcow2 tables, compressed clusters,
//! compression wrappers): any bytes give a written disk or an error, never a panic or a hang.
#![no_main]
use ferric_images::source::Source;
use ferric_images::write::{WriteOptions, write_from};
use libfuzzer_sys::fuzz_target;

struct Mem<'a>(&'a [u8]);

impl Source for Mem<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("ferric-fuzz-write-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let target = dir.join("disk.raw");
    let _ = write_from(
        &mut Mem(data),
        &target,
        &WriteOptions::default(),
        &mut |_| {},
    );
    let _ = std::fs::remove_file(&target);
});
