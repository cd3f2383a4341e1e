//! The bounded, prioritised request queue of one model version. Pure data:
//! no threads, no clock of its own (every call takes `now`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A request waiting in the queue.
#[derive(Debug)]
pub struct Entry<T> {
    /// The payload (inputs and reply channel).
    pub item: T,
    /// Rows it adds to a batch.
    pub rows: usize,
    /// Bytes its inputs hold (what it keeps in memory while it waits).
    pub bytes: usize,
    /// Requests with equal keys can share a batch (same datatypes and
    /// non-batch dimensions).
    pub key: u64,
    /// 0 is the highest priority.
    pub level: usize,
    /// When it joined the queue.
    pub enqueued: Instant,
    /// When it stops being worth running.
    pub deadline: Option<Instant>,
}

/// The queue is at its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// How many requests are waiting.
    pub depth: usize,
    /// The bytes they hold.
    pub bytes: usize,
    /// Which bound: the request count, or the bytes.
    pub by_bytes: bool,
}

/// A batch taken from the queue, and the requests found expired on the way.
#[derive(Debug)]
pub struct Taken<T> {
    /// Requests to run together, in priority then arrival order.
    pub batch: Vec<Entry<T>>,
    /// Requests whose deadline had passed: answer them, never run them.
    pub expired: Vec<Entry<T>>,
}

/// Per-priority FIFO queues under one capacity.
#[derive(Debug)]
pub struct Queue<T> {
    levels: Vec<VecDeque<Entry<T>>>,
    len: usize,
    capacity: usize,
    bytes: usize,
    byte_capacity: usize,
    starvation_limit: Duration,
}

impl<T> Queue<T> {
    /// A queue of `levels` priority levels (at least 1) holding at most
    /// `capacity` requests and `byte_capacity` bytes of inputs. A
    /// lower-priority request that has waited `starvation_limit` goes
    /// before higher-priority ones.
    pub fn new(levels: usize, capacity: usize, byte_capacity: usize, starvation_limit: Duration) -> Self {
        Self {
            levels: (0..levels.max(1)).map(|_| VecDeque::new()).collect(),
            len: 0,
            capacity,
            bytes: 0,
            byte_capacity,
            starvation_limit,
        }
    }

    /// The most bytes the waiting requests may hold.
    pub fn byte_capacity(&self) -> usize {
        self.byte_capacity
    }

    /// Bytes the waiting requests hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a request; its level is clamped to the lowest priority. Returns
    /// the depth including it.
    pub fn push(&mut self, mut entry: Entry<T>) -> Result<usize, (Full, Entry<T>)> {
        let full = |by_bytes| Full { depth: self.len, bytes: self.bytes, by_bytes };
        if self.len >= self.capacity {
            return Err((full(false), entry));
        }
        if self.bytes.saturating_add(entry.bytes) > self.byte_capacity {
            return Err((full(true), entry));
        }
        entry.level = entry.level.min(self.levels.len() - 1);
        self.bytes += entry.bytes;
        self.levels[entry.level].push_back(entry);
        self.len += 1;
        Ok(self.len)
    }

    /// The level the next batch starts from: the highest non-empty one,
    /// unless a lower level's oldest request has starved.
    fn head_level(&self, now: Instant) -> Option<usize> {
        let top = self.levels.iter().position(|l| !l.is_empty())?;
        let starved = self
            .levels
            .iter()
            .enumerate()
            .skip(top + 1)
            .filter_map(|(i, l)| l.front().map(|e| (i, e.enqueued)))
            .filter(|(_, t)| now.saturating_duration_since(*t) >= self.starvation_limit)
            .min_by_key(|(_, t)| *t);
        Some(starved.map(|(i, _)| i).unwrap_or(top))
    }

    /// Rows waiting that could join the next batch, and when the head
    /// request arrived. Expired requests count too (until taken).
    pub fn pending(&self, now: Instant) -> Option<(usize, Instant)> {
        let level = self.head_level(now)?;
        let head = self.levels[level].front()?;
        let rows = self.levels.iter().flatten().filter(|e| e.key == head.key).map(|e| e.rows).sum();
        Some((rows, head.enqueued))
    }

    /// Takes the next batch: first every expired request, then the head
    /// request and as many compatible ones, highest priority first, as fit
    /// in `max_rows` (0: the head alone).
    pub fn take(&mut self, now: Instant, max_rows: usize) -> Taken<T> {
        let mut expired = Vec::new();
        for level in &mut self.levels {
            let (keep, gone): (VecDeque<_>, VecDeque<_>) =
                level.drain(..).partition(|e| e.deadline.is_none_or(|d| d > now));
            *level = keep;
            expired.extend(gone);
        }
        self.len -= expired.len();
        self.bytes -= expired.iter().map(|e| e.bytes).sum::<usize>();

        let mut batch = Vec::new();
        let Some(head_level) = self.head_level(now) else { return Taken { batch, expired } };
        let Some(head) = self.levels[head_level].pop_front() else { return Taken { batch, expired } };
        let (key, mut rows) = (head.key, head.rows);
        batch.push(head);
        if max_rows > 0 {
            let order = std::iter::once(head_level).chain((0..self.levels.len()).filter(|&l| l != head_level));
            for level in order {
                let queue = &mut self.levels[level];
                let mut i = 0;
                while i < queue.len() && rows < max_rows {
                    if queue[i].key == key && rows + queue[i].rows <= max_rows {
                        if let Some(e) = queue.remove(i) {
                            rows += e.rows;
                            batch.push(e);
                        }
                    } else {
                        i += 1;
                    }
                }
            }
        }
        self.len -= batch.len();
        self.bytes -= batch.iter().map(|e| e.bytes).sum::<usize>();
        Taken { batch, expired }
    }

    /// Empties the queue (shutdown without draining).
    pub fn drain_all(&mut self) -> Vec<Entry<T>> {
        self.len = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests;
