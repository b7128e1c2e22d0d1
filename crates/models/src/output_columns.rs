//! A `[m, n]` output written in place by parallel tasks that each own whole columns:
//! the columns of a row are not contiguous, so no safe split of the slice hands them out.

use std::marker::PhantomData;

pub(crate) struct OutputColumns<'a> {
    ptr: *mut f32,
    len: usize,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: tasks write disjoint elements (the contract of `set`); the
// borrow keeps the buffer alive and unaliased while they run.
unsafe impl Sync for OutputColumns<'_> {}

impl<'a> OutputColumns<'a> {
    pub(crate) fn new(y: &'a mut [f32]) -> Self {
        OutputColumns {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            _y: PhantomData,
        }
    }

    /// # Safety
    /// No other task reads or writes index `i` at the same time.
    pub(crate) unsafe fn set(&self, i: usize, v: f32) {
        assert!(i < self.len);
        self.ptr.add(i).write(v);
    }
}
