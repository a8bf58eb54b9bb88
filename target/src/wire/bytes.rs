//! Bounds-checked little-endian field access for the byte-built structures (Identify
//! pages, log pages). Offsets are the spec's constants; a field that does not fit is
//! skipped instead of panicking, and each builder's unit tests pin every offset.

/// Copies `value` to `buffer[offset..]` if it fits.
pub fn put(buffer: &mut [u8], offset: usize, value: &[u8]) {
    let end = offset.checked_add(value.len());
    if let Some(target) = end.and_then(|end| buffer.get_mut(offset..end)) {
        target.copy_from_slice(value);
    }
}

pub fn put_u8(buffer: &mut [u8], offset: usize, value: u8) {
    put(buffer, offset, &[value]);
}

pub fn put_u16(buffer: &mut [u8], offset: usize, value: u16) {
    put(buffer, offset, &value.to_le_bytes());
}

pub fn put_u32(buffer: &mut [u8], offset: usize, value: u32) {
    put(buffer, offset, &value.to_le_bytes());
}

pub fn put_u64(buffer: &mut [u8], offset: usize, value: u64) {
    put(buffer, offset, &value.to_le_bytes());
}

pub fn put_u128(buffer: &mut [u8], offset: usize, value: u128) {
    put(buffer, offset, &value.to_le_bytes());
}

/// `value` padded with `pad` (or cut) to exactly `width` bytes at `offset`.
pub fn put_padded(buffer: &mut [u8], offset: usize, width: usize, value: &[u8], pad: u8) {
    let end = offset.checked_add(width);
    if let Some(field) = end.and_then(|end| buffer.get_mut(offset..end)) {
        field.fill(pad);
        let len = value.len().min(width);
        if let (Some(target), Some(source)) = (field.get_mut(..len), value.get(..len)) {
            target.copy_from_slice(source);
        }
    }
}

/// Reads `N` bytes at `offset`, if present.
pub fn get<const N: usize>(buffer: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    buffer.get(offset..end)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_inside_and_skips_outside() {
        let mut buffer = [0u8; 8];
        put_u32(&mut buffer, 2, 0x0403_0201);
        assert_eq!(buffer, [0, 0, 1, 2, 3, 4, 0, 0]);
        put_u32(&mut buffer, 6, u32::MAX);
        put_u32(&mut buffer, usize::MAX, u32::MAX);
        assert_eq!(buffer, [0, 0, 1, 2, 3, 4, 0, 0]);
    }

    #[test]
    fn padded_fields() {
        let mut buffer = [9u8; 6];
        put_padded(&mut buffer, 1, 4, b"ab", b' ');
        assert_eq!(&buffer, b"\x09ab  \x09");
        put_padded(&mut buffer, 1, 4, b"abcdefg", b' ');
        assert_eq!(&buffer, b"\x09abcd\x09");
    }

    #[test]
    fn get_checks_bounds() {
        assert_eq!(get::<2>(&[1, 2, 3], 1), Some([2, 3]));
        assert_eq!(get::<2>(&[1, 2, 3], 2), None);
        assert_eq!(get::<2>(&[1, 2, 3], usize::MAX), None);
    }
}
