//! Prediction distribution shift: a model version's top output, bucketed
//! row by row, over tumbling windows of a fixed number of rows, compared
//! with a baseline window by the population stability index
//! `PSI = Σ (aᵢ − bᵢ) · ln(aᵢ / bᵢ)` (aᵢ, bᵢ: the window's and the
//! baseline's share of rows in bucket i). The usual reading: below 0.1 the
//! distribution is stable, 0.1–0.2 it moved, above 0.2 it shifted.
//!
//! The top output is the model's first output. Rows of more than one value
//! are classifications: the bucket is the index of the largest value (the
//! predicted class). Rows of one value are regressions or scores: the
//! buckets are the baseline window's deciles. The baseline is the first full
//! window after the version loads, so a shift is judged against what the
//! version first served.
//!
//! It knows nothing of gRPC: the batcher hands it each batch's outputs.

use crate::tensor::Tensor;

/// Smallest share a bucket counts with, so that an empty bucket does not
/// make the index infinite.
const FLOOR: f64 = 1e-4;
/// Buckets of a one-value output (deciles of the baseline).
const VALUE_BUCKETS: usize = 10;
/// Classes beyond this index share the last bucket.
const MAX_CLASSES: usize = 1024;

/// How one row of the top output maps to a bucket.
#[derive(Debug, Clone, PartialEq)]
enum Buckets {
    /// Row → index of its largest value, of this many classes.
    Classes(usize),
    /// Row (one value) → the interval of these ascending edges it falls in.
    Values(Vec<f64>),
}

impl Buckets {
    fn len(&self) -> usize {
        match self {
            Buckets::Classes(n) => *n,
            Buckets::Values(edges) => edges.len() + 1,
        }
    }

    fn of(&self, row: &[f64]) -> usize {
        match self {
            Buckets::Classes(n) => argmax(row).min(n - 1),
            Buckets::Values(edges) => {
                let v = row.first().copied().unwrap_or(0.0);
                edges.partition_point(|edge| *edge <= v)
            }
        }
    }
}

/// The population stability index of `actual` against `expected` (counts
/// per bucket, the same number of buckets).
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let total = |c: &[u64]| c.iter().sum::<u64>().max(1) as f64;
    let (te, ta) = (total(expected), total(actual));
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let e = (e as f64 / te).max(FLOOR);
            let a = (a as f64 / ta).max(FLOOR);
            (a - e) * (a / e).ln()
        })
        .sum()
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// A version's windows: the baseline, and the window filling now.
#[derive(Debug, Default)]
pub struct PredictionWindows {
    window_rows: usize,
    buckets: Option<Buckets>,
    /// Baseline counts per bucket, once the first window is full.
    baseline: Option<Vec<u64>>,
    /// The baseline window's values (one-value outputs), until its deciles are known.
    baseline_values: Vec<f64>,
    current: Vec<u64>,
    rows: usize,
}

impl PredictionWindows {
    /// Windows of `window_rows` rows (0: off).
    pub fn new(window_rows: usize) -> Self {
        Self { window_rows, ..Self::default() }
    }

    /// Counts the rows of a batch's top output; returns the PSI of each
    /// window it completed after the baseline (in order).
    pub fn observe(&mut self, top: &Tensor) -> Vec<f64> {
        let mut completed = Vec::new();
        if self.window_rows == 0 {
            return completed;
        }
        let Some(values) = top.to_f64() else { return completed };
        let rows = top.rows().max(1);
        let width = values.len() / rows;
        if width == 0 {
            return completed;
        }
        for row in values.chunks_exact(width) {
            if let Some(index) = self.row(row) {
                completed.push(index);
            }
        }
        completed
    }

    fn row(&mut self, row: &[f64]) -> Option<f64> {
        let buckets = self.buckets.get_or_insert_with(|| {
            if row.len() > 1 {
                Buckets::Classes(row.len().min(MAX_CLASSES))
            } else {
                Buckets::Values(Vec::new())
            }
        });
        if self.baseline.is_none() && matches!(buckets, Buckets::Values(_)) {
            // Deciles need the whole baseline window first.
            self.baseline_values.push(row.first().copied().unwrap_or(0.0));
            self.rows += 1;
            if self.rows == self.window_rows {
                let mut sorted = std::mem::take(&mut self.baseline_values);
                sorted.sort_by(f64::total_cmp);
                let edges: Vec<f64> = (1..VALUE_BUCKETS).map(|i| sorted[i * sorted.len() / VALUE_BUCKETS]).collect();
                let buckets = Buckets::Values(edges);
                let mut counts = vec![0; buckets.len()];
                for v in &sorted {
                    counts[buckets.of(&[*v])] += 1;
                }
                self.buckets = Some(buckets);
                self.baseline = Some(counts);
                self.rows = 0;
            }
            return None;
        }
        if self.current.is_empty() {
            self.current = vec![0; buckets.len()];
        }
        self.current[buckets.of(row)] += 1;
        self.rows += 1;
        if self.rows < self.window_rows {
            return None;
        }
        let window = std::mem::take(&mut self.current);
        self.rows = 0;
        match &self.baseline {
            None => {
                self.baseline = Some(window);
                None
            }
            Some(baseline) => Some(psi(baseline, &window)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};
    use proptest::prelude::*;

    fn classes(rows: &[usize], width: usize) -> Tensor {
        let mut data = Vec::new();
        for &class in rows {
            for i in 0..width {
                data.extend_from_slice(&(if i == class { 1.0f32 } else { 0.0 }).to_le_bytes());
            }
        }
        Tensor::try_new(DataType::F32, vec![rows.len(), width], TensorData::Fixed(data)).expect("tensor")
    }

    fn values(vs: &[f32]) -> Tensor {
        let data = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::try_new(DataType::F32, vec![vs.len(), 1], TensorData::Fixed(data)).expect("tensor")
    }

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        assert!(psi(&[25, 25, 25, 25], &[50, 50, 50, 50]).abs() < 1e-12);
        let moved = psi(&[25, 25, 25, 25], &[30, 25, 25, 20]);
        let shifted = psi(&[25, 25, 25, 25], &[70, 10, 10, 10]);
        assert!(moved > 0.0 && moved < 0.1, "{moved}");
        assert!(shifted > 0.2, "{shifted}");
        // An empty bucket counts with the floor, not as infinity.
        assert!(psi(&[50, 50, 0, 0], &[0, 0, 50, 50]).is_finite());
    }

    #[test]
    fn the_first_window_is_the_baseline_and_each_later_one_is_compared() {
        let mut w = PredictionWindows::new(4);
        assert!(w.observe(&classes(&[0, 1, 2, 3], 4)).is_empty(), "the baseline is no comparison");
        let same = w.observe(&classes(&[3, 2, 1, 0], 4));
        assert_eq!(same.len(), 1);
        assert!(same[0].abs() < 1e-12, "{same:?}");
        // One batch that fills two windows reports both, in order.
        let two = w.observe(&classes(&[0, 1, 2, 3, 0, 0, 0, 0], 4));
        assert_eq!(two.len(), 2);
        assert!(two[0].abs() < 1e-12 && two[1] > 0.2, "{two:?}");
    }

    #[test]
    fn one_value_outputs_are_bucketed_by_the_baselines_deciles() {
        let mut w = PredictionWindows::new(100);
        let baseline: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert!(w.observe(&values(&baseline)).is_empty());
        let again: Vec<f32> = (0..100).rev().map(|i| i as f32 + 0.5).collect();
        assert!(w.observe(&values(&again))[0] < 0.01);
        let higher: Vec<f32> = (0..100).map(|i| i as f32 + 60.0).collect();
        assert!(w.observe(&values(&higher))[0] > 0.2);
    }

    #[test]
    fn off_strings_and_empty_tensors_count_nothing() {
        assert!(PredictionWindows::new(0).observe(&classes(&[0, 1], 2)).is_empty());
        let strings = Tensor::try_new(DataType::Bytes, vec![1], TensorData::Bytes(vec![b"a".to_vec()])).expect("t");
        let mut w = PredictionWindows::new(1);
        assert!(w.observe(&strings).is_empty() && w.observe(&strings).is_empty());
    }

    proptest! {
        /// The index is never negative, and zero only for equal shares.
        #[test]
        fn psi_is_non_negative(e in proptest::collection::vec(0u64..1000, 2..12), seed in any::<u64>()) {
            let a: Vec<u64> = e.iter().enumerate().map(|(i, v)| (v ^ seed.rotate_left(i as u32)) % 1000).collect();
            prop_assert!(psi(&e, &a) >= -1e-12);
            prop_assert!(psi(&e, &e).abs() < 1e-12);
        }
    }
}
