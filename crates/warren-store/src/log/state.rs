//! The log's in-memory state behind its one mutex: records not yet written,
//! the sequence number, and which segment holds each live message.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use super::live::LiveIndex;
use super::tail::Pins;
use super::QueueKey;

/// Hashes message ids (sequential u64s) with one multiply instead of SipHash.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by message id.
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// Message counts of one segment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegStat {
    pub live: u64,
    pub total: u64,
}

/// Everything the `Log::pending` mutex guards.
pub(crate) struct Pending {
    /// (segment number, bytes) chunks not yet written.
    pub chunks: Vec<(u64, Vec<u8>)>,
    /// Sequence number of the last record pushed.
    pub seq: u64,
    /// The segment new records go to.
    pub segment: u64,
    /// Bytes pushed to `segment` so far.
    pub segment_bytes: u64,
    /// Live stored messages: segment and holders (interned queue keys).
    pub index: LiveIndex,
    pub segs: BTreeMap<u64, SegStat>,
    pub keys: HashMap<QueueKey, u32>,
    pub key_names: Vec<QueueKey>,
    pub closed: bool,
    /// Segments recovered queues still read back (not to be compacted).
    pub pins: Arc<Pins>,
}

impl Pending {
    pub fn intern(&mut self, k: &QueueKey) -> u32 {
        if let Some(i) = self.keys.get(k) {
            return *i;
        }
        let i = self.key_names.len() as u32;
        self.key_names.push(k.clone());
        self.keys.insert(k.clone(), i);
        i
    }

    pub fn add_live(&mut self, id: u64, seg: u64, queues: Vec<u32>) {
        let st = self.segs.entry(seg).or_default();
        st.live += 1;
        st.total += 1;
        self.index.insert(id, seg, queues);
    }

    /// Queue `q` no longer holds message `id`; the message dies with its
    /// last queue.
    pub fn release(&mut self, id: u64, q: &QueueKey) {
        let Some(&k) = self.keys.get(q) else {
            return;
        };
        if let Some(seg) = self.index.release(id, k) {
            if let Some(st) = self.segs.get_mut(&seg) {
                st.live -= 1;
            }
        }
    }
}
