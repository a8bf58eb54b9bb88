//! Files and block devices as namespaces: opened once, O_DIRECT when the file system
//! takes it, logical block size read at start-up, size read at start-up and again when
//! asked (a file grown or a volume resized under a running target).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BackendError, BackendOp};

#[derive(Debug)]
pub struct FileBackend {
    pub path: PathBuf,
    pub file: File,
    size_bytes: AtomicU64,
    pub block_size_shift: u8,
    pub block_device: bool,
    /// O_DIRECT: the page cache is bypassed.
    pub direct: bool,
    pub volatile_write_cache: bool,
    pub pci_device: Option<PathBuf>,
    /// O_DIRECT on a block device whose queue polls (NVMe with `poll_queues`): reads
    /// and writes may complete by polling instead of an interrupt.
    pub pollable: bool,
}

impl FileBackend {
    /// Opens `path` read-write. Block devices report their own logical block size;
    /// files use `block_size_bytes` (default 512).
    pub fn open(path: &Path, block_size_bytes: Option<u32>) -> Result<FileBackend, BackendError> {
        let display = path.display().to_string();
        let open_with = |flags: i32| OpenOptions::new().read(true).write(true).custom_flags(flags).open(path);
        // O_NOATIME: reads need not update the access time (checked on every read, a
        // block device's too). Only the owner or CAP_FOWNER may ask: EPERM retries without.
        let open = |direct: bool| {
            let flags = if direct { libc::O_DIRECT } else { 0 };
            match open_with(flags | libc::O_NOATIME) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_with(flags),
                opened => opened,
            }
        };
        let (file, direct) = match open(true) {
            Ok(file) => (file, true),
            // tmpfs and some others refuse O_DIRECT; buffered I/O plus fdatasync on Flush
            // keeps the durability promise there.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                (open(false).map_err(|source| BackendError::Open { path: display.clone(), source })?, false)
            }
            Err(source) => return Err(BackendError::Open { path: display, source }),
        };
        let metadata = file.metadata().map_err(|source| BackendError::Open { path: display.clone(), source })?;
        let block_device = metadata.file_type().is_block_device();
        let (size_bytes, logical_block_bytes, pci_device, volatile_write_cache, pollable) = if block_device {
            let sysfs = sysfs_block_dir(&metadata);
            let queue = sysfs.join("queue");
            let size = read_sysfs_u64(&sysfs.join("size"))? * 512;
            let logical = read_sysfs_u64(&queue.join("logical_block_size"))? as u32;
            let cache = std::fs::read_to_string(queue.join("write_cache")).map(|s| s.trim() != "write through").unwrap_or(true);
            let polls = direct && read_sysfs_u64(&queue.join("io_poll")).is_ok_and(|poll| poll == 1);
            (size, logical, pci_device_of_block(&sysfs), cache, polls)
        } else if metadata.is_file() {
            (metadata.len(), block_size_bytes.unwrap_or(512), None, true, false)
        } else {
            return Err(BackendError::Unusable { path: display, what: "not a regular file or block device".into() });
        };
        let block_size_shift = match logical_block_bytes {
            512 => 9,
            4096 => 12,
            other => return Err(BackendError::Unusable { path: display, what: format!("logical block size {other} (512 or 4096 supported)") }),
        };
        if size_bytes < logical_block_bytes.into() {
            return Err(BackendError::Unusable { path: display, what: format!("size {size_bytes} bytes is smaller than one block") });
        }
        let size_bytes = AtomicU64::new(size_bytes - size_bytes % u64::from(logical_block_bytes));
        Ok(FileBackend { path: path.to_owned(), file, size_bytes, block_size_shift, block_device, direct, volatile_write_cache, pci_device, pollable })
    }

    /// The size in bytes, whole blocks only.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Reads the size again (of the open file, not of whatever the path names now) and
    /// keeps it; refused, with the old size kept, when it is smaller than one block.
    pub fn refresh_size(&self) -> Result<u64, BackendError> {
        let display = self.path.display().to_string();
        let metadata = self.file.metadata().map_err(|source| BackendError::Open { path: display.clone(), source })?;
        let size = if self.block_device { read_sysfs_u64(&sysfs_block_dir(&metadata).join("size"))? * 512 } else { metadata.len() };
        let block = 1u64 << self.block_size_shift;
        if size < block {
            return Err(BackendError::Unusable { path: display, what: format!("size {size} bytes is smaller than one block") });
        }
        let size = size - size % block;
        self.size_bytes.store(size, Ordering::Relaxed);
        Ok(size)
    }

    /// Runs a Read or Write to completion on the calling thread (start-up probes and the
    /// control socket's copies, outside any queue); other operations are refused.
    pub fn execute_blocking(&self, op: &BackendOp) -> Result<u32, BackendError> {
        use std::os::fd::AsRawFd;
        let (offset, buffer, write) = match op {
            BackendOp::Read { offset_bytes, buffer } => (*offset_bytes, buffer.buffer(), false),
            BackendOp::Write { offset_bytes, buffer, .. } => (*offset_bytes, buffer.buffer(), true),
            _ => return Err(BackendError::Io { op: op.kind(), source: io::Error::from(io::ErrorKind::Unsupported) }),
        };
        let len = buffer.len_bytes as usize;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let address = (buffer.address as usize + done) as *mut libc::c_void;
            let Ok(at) = libc::off_t::try_from(at) else {
                return Err(BackendError::Io { op: op.kind(), source: io::Error::from_raw_os_error(libc::EINVAL) });
            };
            let (fd, rest) = (self.file.as_raw_fd(), len - done);
            let moved = if write {
                // SAFETY: the op owns its buffer (a lease or a slot loan): `len` mapped
                // bytes from `buffer.address` that nothing else touches while the op is
                // held, here for the whole call; the kernel reads only `rest` of them.
                #[allow(unsafe_code)]
                unsafe {
                    libc::pwrite(fd, address, rest, at)
                }
            } else {
                // SAFETY: as above; the kernel writes only those `rest` bytes.
                #[allow(unsafe_code)]
                unsafe {
                    libc::pread(fd, address, rest, at)
                }
            };
            match moved {
                0 => return Err(BackendError::Short { op: op.kind(), done: done as u32, expected: len as u32 }),
                moved if moved < 0 => {
                    let source = io::Error::last_os_error();
                    if source.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(BackendError::Io { op: op.kind(), source });
                }
                moved => done += moved as usize,
            }
        }
        Ok(len as u32)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} bytes, {}-byte blocks, {})",
            self.path.display(),
            if self.block_device { "block device" } else { "file" },
            self.size_bytes(),
            1u32 << self.block_size_shift,
            match (self.direct, self.pollable) {
                (true, true) => "O_DIRECT, polled queues",
                (true, false) => "O_DIRECT",
                (false, _) => "buffered",
            }
        )
    }
}

/// The sysfs directory of a block device, found by its device number (device nodes made
/// by hand, e.g. under /dev/mapper without udev, need not be named like the kernel's).
fn sysfs_block_dir(metadata: &std::fs::Metadata) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let rdev = metadata.rdev();
    PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev)))
}

fn read_sysfs_u64(path: &Path) -> Result<u64, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|source| BackendError::Open { path: path.display().to_string(), source })?;
    text.trim().parse().map_err(|_| BackendError::Unusable { path: path.display().to_string(), what: format!("unexpected content {text:?}") })
}

/// For an NVMe namespace block device, the PCI function of its controller. The
/// `device` link of a path device resolves to .../BDF/nvme/nvmeX; a native-multipath
/// head (nvmeXnY) has none of its own, so its first path under `multipath/` is used.
fn pci_device_of_block(block: &Path) -> Option<PathBuf> {
    let path_device = std::fs::read_dir(block.join("multipath"))
        .ok()
        .and_then(|mut entries| entries.next())
        .and_then(|entry| entry.ok())
        .map(|entry| entry.path().join("device"));
    let mut dir = std::fs::canonicalize(path_device.unwrap_or_else(|| block.join("device"))).ok()?;
    loop {
        if dir.join("vendor").exists() && dir.join("class").exists() && dir.join("config").exists() {
            return Some(dir);
        }
        if !dir.pop() || dir == Path::new("/sys") {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_file_sizes_round_down_to_blocks() {
        let dir = std::env::temp_dir().join(format!("p2ptgt-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ns");
        std::fs::write(&path, vec![0u8; 4096 + 100]).unwrap();
        let backend = FileBackend::open(&path, Some(4096)).unwrap();
        assert_eq!(backend.size_bytes(), 4096);
        std::fs::write(&path, vec![0u8; 3 * 4096 + 1]).unwrap();
        assert_eq!(backend.refresh_size().unwrap(), 3 * 4096, "grown, whole blocks");
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(backend.refresh_size().is_err(), "smaller than a block");
        assert_eq!(backend.size_bytes(), 3 * 4096, "the old size stays");
        assert_eq!(backend.block_size_shift, 12);
        assert!(backend.pci_device.is_none());
        assert!(FileBackend::open(&path, Some(1000)).is_err(), "odd block size refused");
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(FileBackend::open(&path, None).is_err(), "smaller than a block");
        assert!(FileBackend::open(&dir.join("missing"), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
