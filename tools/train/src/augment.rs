//! Random translations of image samples while training. A few pixels of
//! shift is how far one photo of a thing differs from the next; without
//! it the input projection memorises a 4000-image train split (mnist5k:
//! 98% on train, 90% on a held-out part of it).

/// How a sample's `[T, D]` rows tile its image: a `grid` (rows, columns)
/// of `patch`es (height, width), patches and their pixels row-major.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLayout {
    pub patch: (usize, usize),
    pub grid: (usize, usize),
}

impl ImageLayout {
    /// `T = rows` image rows of `D = cols` pixels (digits).
    pub const fn rows(rows: usize, cols: usize) -> Self {
        ImageLayout { patch: (1, cols), grid: (rows, 1) }
    }

    /// Square `p`-pixel patches, `n x n` of them (mnist5k, fashion).
    pub const fn patches(p: usize, n: usize) -> Self {
        ImageLayout { patch: (p, p), grid: (n, n) }
    }

    pub fn pixels(&self) -> usize {
        self.patch.0 * self.patch.1 * self.grid.0 * self.grid.1
    }

    /// Where pixel (`y`, `x`) is in the sample.
    fn index(&self, y: usize, x: usize) -> usize {
        let (ph, pw) = self.patch;
        ((y / ph) * self.grid.1 + x / pw) * ph * pw + (y % ph) * pw + x % pw
    }

    /// `src` moved `dy` pixels down and `dx` right into `dst`; what moves in
    /// from outside is background (0).
    pub fn shift(&self, src: &[f32], dy: isize, dx: isize, dst: &mut [f32]) {
        let (h, w) = (self.patch.0 * self.grid.0, self.patch.1 * self.grid.1);
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as isize - dy, x as isize - dx);
                let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                dst[self.index(y, x)] = if inside { src[self.index(sy as usize, sx as usize)] } else { 0.0 };
            }
        }
    }
}

/// Random changes of a sensor series while training: how one recording of
/// a gesture differs from the next (a little earlier or later, a little
/// stronger, with some noise). 36-67 train samples are too few to learn
/// that from the data alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesAug {
    /// Largest move in time, in rows, either way (the ends repeat).
    pub shift: usize,
    /// Largest change of amplitude around each feature's mean, as a fraction.
    pub scale: f32,
    /// Gaussian noise, its sigma a fraction of each feature's spread.
    pub jitter: f32,
    /// Largest move across the features, either way (the ends repeat),
    /// for spectrogram rows whose features are frequency bands: a voice's
    /// formants sit a little higher or lower than another's. 0 for
    /// sensor channels.
    pub bands: usize,
}

impl SeriesAug {
    /// Parses `shift,scale,jitter[,bands]` (e.g. `10,0.1,0.05`).
    pub fn parse(s: &str) -> Result<SeriesAug, String> {
        let p: Vec<&str> = s.split(',').collect();
        let bad = || format!("series augmentation {s:?}: want shift,scale,jitter[,bands] (e.g. 10,0.1,0.05)");
        let (a, b, c, bands) = match p[..] {
            [a, b, c] => (a, b, c, "0"),
            [a, b, c, d] => (a, b, c, d),
            _ => return Err(bad()),
        };
        Ok(SeriesAug {
            shift: a.trim().parse().map_err(|_| bad())?,
            scale: b.trim().parse().map_err(|_| bad())?,
            jitter: c.trim().parse().map_err(|_| bad())?,
            bands: bands.trim().parse().map_err(|_| bad())?,
        })
    }

    /// Changes `x` (`t` rows of `d` features) in place; `u` draws uniform
    /// numbers in [0, 1).
    pub fn apply(&self, x: &mut [f32], t: usize, d: usize, mut u: impl FnMut() -> f32) {
        let src = x.to_vec();
        let s = (u() * (2 * self.shift + 1) as f32) as isize - self.shift as isize;
        let b = match self.bands {
            0 => 0,
            m => (u() * (2 * m + 1) as f32) as isize - m as isize,
        };
        for r in 0..t {
            let from = (r as isize - s).clamp(0, t as isize - 1) as usize;
            for f in 0..d {
                x[r * d + f] = src[from * d + (f as isize - b).clamp(0, d as isize - 1) as usize];
            }
        }
        for f in 0..d {
            let col = || (0..t).map(move |r| r * d + f);
            let mean = col().map(|i| x[i]).sum::<f32>() / t as f32;
            let sd = (col().map(|i| (x[i] - mean).powi(2)).sum::<f32>() / t as f32).sqrt();
            let gain = 1.0 + self.scale * (2.0 * u() - 1.0);
            for i in col() {
                // Box-Muller: a standard normal from two uniforms.
                let n = (-2.0 * (1.0 - u()).ln()).sqrt() * (std::f32::consts::TAU * u()).cos();
                x[i] = mean + (x[i] - mean) * gain + self.jitter * sd * n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_aug_shifts_in_time_and_keeps_the_ends() {
        // One feature, 6 rows 0..6; a draw of 0.99 is the largest shift.
        let aug = SeriesAug { shift: 2, scale: 0.0, jitter: 0.0, bands: 0 };
        let mut x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        aug.apply(&mut x, 6, 1, || 0.99);
        assert_eq!(x, [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
        let mut x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        aug.apply(&mut x, 6, 1, || 0.0);
        assert_eq!(x, [2.0, 3.0, 4.0, 5.0, 5.0, 5.0]);
        assert_eq!(SeriesAug::parse("10,0.1,0.05"), Ok(SeriesAug { shift: 10, scale: 0.1, jitter: 0.05, bands: 0 }));
        assert_eq!(SeriesAug::parse("4,0,0,2"), Ok(SeriesAug { shift: 4, scale: 0.0, jitter: 0.0, bands: 2 }));
        assert!(SeriesAug::parse("10,0.1").is_err());
    }

    #[test]
    fn series_aug_moves_bands_and_keeps_the_edge_bands() {
        // Two rows of 5 bands; the first draw (time) picks no shift, the
        // second the largest move up.
        let aug = SeriesAug { shift: 1, scale: 0.0, jitter: 0.0, bands: 2 };
        let mut x: Vec<f32> = (0..10).map(|v| v as f32).collect();
        let mut draws = [0.5, 0.99].into_iter().chain(std::iter::repeat(0.5));
        aug.apply(&mut x, 2, 5, || draws.next().unwrap());
        assert_eq!(x, [0.0, 0.0, 0.0, 1.0, 2.0, 5.0, 5.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn series_aug_scales_around_the_mean_and_adds_noise() {
        let aug = SeriesAug { shift: 0, scale: 0.5, jitter: 0.0, bands: 0 };
        // u = 0.5 then 1.0 - epsilon: no shift, gain 1 + 0.5 * (2 * 1 - 1).
        let mut draws = [0.5f32, 0.999_999].into_iter().chain(std::iter::repeat(0.5));
        let mut x = vec![1.0, 3.0];
        aug.apply(&mut x, 2, 1, || draws.next().unwrap_or(0.5));
        assert!((x[0] - 0.5).abs() < 1e-4 && (x[1] - 3.5).abs() < 1e-4, "{x:?}");
        let noisy = SeriesAug { shift: 0, scale: 0.0, jitter: 0.1, bands: 0 };
        let mut y = vec![1.0, 3.0, 1.0, 3.0];
        let mut k = 0u32;
        noisy.apply(&mut y, 4, 1, || {
            k += 1;
            (k as f32 * 0.37).fract()
        });
        assert!(y.iter().zip([1.0, 3.0, 1.0, 3.0]).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn a_shift_moves_pixels_across_patch_borders() {
        // A 4x4 image as 2x2 patches of 2x2; pixel value = 10 y + x + 1.
        let l = ImageLayout::patches(2, 2);
        let mut img = vec![0f32; 16];
        for y in 0..4 {
            for x in 0..4 {
                img[l.index(y, x)] = (10 * y + x + 1) as f32;
            }
        }
        assert_eq!(&img[..4], &[1.0, 2.0, 11.0, 12.0], "first patch, row-major");
        let mut out = vec![0f32; 16];
        l.shift(&img, 1, -1, &mut out);
        assert_eq!(out[l.index(0, 0)], 0.0, "the top row comes from outside");
        assert_eq!(out[l.index(1, 0)], 2.0, "(1, 0) <- (0, 1)");
        assert_eq!(out[l.index(2, 1)], 13.0, "(2, 1) <- (1, 2), from the next patch");
        assert_eq!(out[l.index(3, 3)], 0.0, "the right column comes from outside");
        l.shift(&img, 0, 0, &mut out);
        assert_eq!(out, img);
    }

    #[test]
    fn rows_layout_is_plain_row_major() {
        let l = ImageLayout::rows(8, 8);
        assert_eq!(l.index(3, 5), 3 * 8 + 5);
        assert_eq!(l.pixels(), 64);
    }
}
