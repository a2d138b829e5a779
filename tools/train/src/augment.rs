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

#[cfg(test)]
mod tests {
    use super::*;

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
