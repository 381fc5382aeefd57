//! Helpers shared by the store targets.

/// Rewrite each record's checksum to match its payload, so that mutations
/// reach the record decoder instead of stopping at the checksum check.
/// Follows the length fields (`len: u32 | crc32: u32 | payload`) as far as
/// they lead inside the buffer.
pub fn fix_crcs(seg: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 8 <= seg.len() {
        let len = u32::from_be_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        if len == 0 || end > seg.len() {
            break;
        }
        let crc = crc32fast::hash(&seg[pos + 8..end]);
        seg[pos + 4..pos + 8].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// The first record boundary at or past the middle (or the middle itself).
#[allow(dead_code)] // store_recover only
pub fn split_point(seg: &[u8]) -> usize {
    let mut pos = 0usize;
    while pos + 8 <= seg.len() && pos < seg.len() / 2 {
        let len = u32::from_be_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > seg.len() {
            return seg.len() / 2;
        }
        pos += 8 + len;
    }
    pos.min(seg.len())
}
