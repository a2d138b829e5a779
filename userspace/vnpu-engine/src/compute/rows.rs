//! Row-disjoint views of buffers for the executor's parallel row passes:
//! each task gets its own rows as plain `&mut` slices, so models share
//! buffers between tasks without raw pointers.

use crate::compute::kernels::{self, Isa};
use crate::compute::quant::{ActQ8, QK};

/// Buffers that split by row into disjoint parts (see [`crate::Exec::par_rows_mut`]).
pub trait RowSplit: Send + Sized {
    /// What a task gets for one row.
    type Row;
    /// Rows `..at` and `at..`.
    fn split_rows(self, at: usize) -> (Self, Self);
    /// The first row and the rest.
    fn split_first_row(self) -> (Self::Row, Self);
}

/// An `[n, len]` matrix split by rows of `len` elements.
pub struct Rows<'a, T> {
    data: &'a mut [T],
    len: usize,
}

impl<'a, T> Rows<'a, T> {
    pub fn new(data: &'a mut [T], len: usize) -> Self {
        Rows { data, len }
    }
}

impl<'a, T: Send> RowSplit for Rows<'a, T> {
    type Row = &'a mut [T];
    fn split_rows(self, at: usize) -> (Self, Self) {
        let (a, b) = self.data.split_at_mut(at * self.len);
        (Rows::new(a, self.len), Rows::new(b, self.len))
    }
    fn split_first_row(self) -> (&'a mut [T], Self) {
        let (a, b) = self.data.split_at_mut(self.len);
        (a, Rows::new(b, self.len))
    }
}

/// One item per row (e.g. a row's slots in several buffers).
impl<'a, T: Send> RowSplit for &'a mut [T] {
    type Row = &'a mut T;
    fn split_rows(self, at: usize) -> (Self, Self) {
        self.split_at_mut(at)
    }
    fn split_first_row(self) -> (&'a mut T, Self) {
        self.split_first_mut().expect("a row per task")
    }
}

impl<A: RowSplit, B: RowSplit> RowSplit for (A, B) {
    type Row = (A::Row, B::Row);
    fn split_rows(self, at: usize) -> (Self, Self) {
        let ((a0, a1), (b0, b1)) = (self.0.split_rows(at), self.1.split_rows(at));
        ((a0, b0), (a1, b1))
    }
    fn split_first_row(self) -> (Self::Row, Self) {
        let ((a0, a1), (b0, b1)) = (self.0.split_first_row(), self.1.split_first_row());
        ((a0, b0), (a1, b1))
    }
}

impl<A: RowSplit, B: RowSplit, C: RowSplit> RowSplit for (A, B, C) {
    type Row = (A::Row, B::Row, C::Row);
    fn split_rows(self, at: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split_rows(at);
        let (b0, b1) = self.1.split_rows(at);
        let (c0, c1) = self.2.split_rows(at);
        ((a0, b0, c0), (a1, b1, c1))
    }
    fn split_first_row(self) -> (Self::Row, Self) {
        let (a0, a1) = self.0.split_first_row();
        let (b0, b1) = self.1.split_first_row();
        let (c0, c1) = self.2.split_first_row();
        ((a0, b0, c0), (a1, b1, c1))
    }
}

/// Rows of an int8 activation matrix, each quantized by the task that owns it.
pub struct ActRows<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [f32],
    off: &'a mut [i32],
    k: usize,
}

impl<'a> ActRows<'a> {
    /// Sizes `act` for `[n, k]` and splits it by row.
    pub fn new(act: &'a mut ActQ8, n: usize, k: usize) -> ActRows<'a> {
        act.reset(n, k);
        let nb = n * k / QK;
        ActRows {
            qs: &mut act.qs[..n * k],
            d: &mut act.d[..nb],
            s: &mut act.s[..nb],
            off: &mut act.off[..nb],
            k,
        }
    }
}

/// One row of [`ActRows`].
pub struct ActRow<'a> {
    qs: &'a mut [i8],
    d: &'a mut [f32],
    s: &'a mut [f32],
    off: &'a mut [i32],
}

impl ActRow<'_> {
    /// Quantizes `x` (the row's `k` floats) into this row.
    pub fn quantize(self, isa: Isa, x: &[f32]) {
        assert!(x.len() == self.qs.len());
        kernels::quantize_row_q8_with(isa, x, self.qs, self.d, self.s, self.off);
    }
}

impl<'a> RowSplit for ActRows<'a> {
    type Row = ActRow<'a>;
    fn split_rows(self, at: usize) -> (Self, Self) {
        let (k, nb) = (self.k, at * self.k / QK);
        let (q0, q1) = self.qs.split_at_mut(at * k);
        let (d0, d1) = self.d.split_at_mut(nb);
        let (s0, s1) = self.s.split_at_mut(nb);
        let (o0, o1) = self.off.split_at_mut(nb);
        (
            ActRows {
                qs: q0,
                d: d0,
                s: s0,
                off: o0,
                k,
            },
            ActRows {
                qs: q1,
                d: d1,
                s: s1,
                off: o1,
                k,
            },
        )
    }
    fn split_first_row(self) -> (ActRow<'a>, Self) {
        let (r, rest) = self.split_rows(1);
        (
            ActRow {
                qs: r.qs,
                d: r.d,
                s: r.s,
                off: r.off,
            },
            rest,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::Exec;

    #[test]
    fn par_rows_mut_hands_each_row_to_one_task() {
        for threads in [1, 2, 3] {
            let exec = Exec::new(threads);
            for n in [0usize, 1, 2, 5, 17] {
                let (mut a, mut b) = (vec![0f32; n * 3], vec![0u32; n]);
                exec.par_rows_mut(n, (Rows::new(&mut a, 3), &mut b[..]), |t, (r, c)| {
                    r.fill(t as f32);
                    *c += 1;
                });
                assert!(a
                    .chunks(3)
                    .enumerate()
                    .all(|(t, r)| r.iter().all(|&v| v == t as f32)));
                assert!(b.iter().all(|&c| c == 1));
            }
        }
    }

    #[test]
    fn par_blocks_mut_hands_out_group_columns() {
        let exec = Exec::new(2);
        let (nb, w, groups) = (3, 2, [2usize, 1, 3]);
        let n: usize = groups.iter().sum();
        let mut out = vec![0f32; n * nb * w];
        exec.par_blocks_mut(&mut out, nb, w, &groups, &|task, blocks| {
            assert_eq!(blocks.len(), groups[task / nb]);
            for b in blocks.iter_mut() {
                b.fill(task as f32);
            }
        });
        let mut r0 = 0;
        for (g, &len) in groups.iter().enumerate() {
            for r in r0..r0 + len {
                for b in 0..nb {
                    let want = (g * nb + b) as f32;
                    assert!(out[(r * nb + b) * w..][..w].iter().all(|&v| v == want));
                }
            }
            r0 += len;
        }
    }
}
