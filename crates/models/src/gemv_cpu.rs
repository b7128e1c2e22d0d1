//! `y += x @ rows` for one f32 activation row: the inner loop of a small-batch dense
//! matmul, bound by streaming the weight, so it only has to keep up with memory.

/// `y[j] += sum_i xs[i] * rows[i * stride + j]`.
pub(crate) fn add_rows(y: &mut [f32], xs: &[f32], rows: &[f32], stride: usize) {
    assert!(y.len() <= stride);
    assert!(xs.is_empty() || rows.len() >= (xs.len() - 1) * stride + y.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature the function is compiled for was detected just above.
            return unsafe { add_rows_avx512(y, xs, rows, stride) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { add_rows_avx2(y, xs, rows, stride) };
        }
    }
    add_rows_generic::<false>(y, xs, rows, stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_rows_avx512(y: &mut [f32], xs: &[f32], rows: &[f32], stride: usize) {
    add_rows_generic::<true>(y, xs, rows, stride)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_rows_avx2(y: &mut [f32], xs: &[f32], rows: &[f32], stride: usize) {
    add_rows_generic::<true>(y, xs, rows, stride)
}

/// Four weight rows per pass over `y`, so `y` is loaded and stored once per four rows
/// read. `FMA`: fused multiply-add (only where the CPU has it; elsewhere `mul_add` is a
/// slow library call).
#[inline(always)]
fn add_rows_generic<const FMA: bool>(y: &mut [f32], xs: &[f32], rows: &[f32], stride: usize) {
    let n = y.len();
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { c + a * b };
    let row = |i: usize| &rows[i * stride..i * stride + n];
    let quads = xs.len() / 4;
    for q in 0..quads {
        let x = &xs[4 * q..4 * q + 4];
        let (r0, r1, r2, r3) = (row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3));
        for j in 0..n {
            let acc = madd(x[0], r0[j], y[j]);
            let acc = madd(x[1], r1[j], acc);
            let acc = madd(x[2], r2[j], acc);
            y[j] = madd(x[3], r3[j], acc);
        }
    }
    for (i, &x) in xs.iter().enumerate().skip(4 * quads) {
        for (a, w) in y.iter_mut().zip(row(i)) {
            *a = madd(x, *w, *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_loop() {
        // 7 rows: one pass of four, three single rows; 37 columns: a vector tail.
        let (k, n) = (7, 37);
        let xs: Vec<f32> = (0..k).map(|i| i as f32 * 0.5 - 1.0).collect();
        let rows: Vec<f32> = (0..k * n).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
        let mut y = vec![1f32; n];
        add_rows(&mut y, &xs, &rows, n);
        for (j, got) in y.iter().enumerate() {
            let want = 1.0 + (0..k).map(|i| xs[i] * rows[i * n + j]).sum::<f32>();
            assert!((got - want).abs() < 1e-4, "column {j}: {got} vs {want}");
        }
        // Columns 5..25 of the same rows.
        let mut part = vec![0f32; 20];
        add_rows(&mut part, &xs, &rows[5..], n);
        for (j, got) in part.iter().enumerate() {
            let want = (0..k).map(|i| xs[i] * rows[i * n + 5 + j]).sum::<f32>();
            assert!(
                (got - want).abs() < 1e-4,
                "column {}: {got} vs {want}",
                j + 5
            );
        }
    }
}
