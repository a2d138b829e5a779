//! The text half of a task with two inputs (an image and its caption):
//! each sample's token ids as the device gets them, and the backbone's
//! embedding rows of the ids that occur, gathered once. A batch pads its
//! texts on the right; the mask says which positions are real.

use std::collections::BTreeMap;

use candle_core::{Device, Result, Tensor};

pub struct Texts {
    /// Per sample, its tokens as rows of `table`.
    rows: Vec<Vec<u32>>,
    /// `[distinct ids + 1, d]`: their embeddings, then zeros for padding.
    table: Tensor,
    pad: u32,
}

impl Texts {
    /// `tokens[i]`: sample `i`'s ids; `embed`: the embedding rows of ids.
    pub fn new(
        tokens: &[Vec<u32>],
        d: usize,
        embed: impl FnOnce(&[u32]) -> std::result::Result<Vec<f32>, String>,
        dev: &Device,
    ) -> std::result::Result<Self, String> {
        let mut index = BTreeMap::new();
        for &id in tokens.iter().flatten() {
            let next = index.len() as u32;
            index.entry(id).or_insert(next);
        }
        let mut ids = vec![0u32; index.len()];
        index.iter().for_each(|(&id, &row)| ids[row as usize] = id);
        let mut table = embed(&ids)?;
        table.resize(table.len() + d, 0.0);
        let rows = tokens.iter().map(|t| t.iter().map(|id| index[id]).collect()).collect();
        let table = Tensor::from_vec(table, (ids.len() + 1, d), dev).map_err(|e| e.to_string())?;
        Ok(Texts { rows, table, pad: ids.len() as u32 })
    }

    /// Embeddings `[b, l, d]` of the samples' texts, right-padded to the
    /// longest (`l`), and the mask `[b, l]` (1 for a real token).
    pub fn batch(&self, samples: &[usize]) -> Result<(Tensor, Tensor)> {
        let l = samples.iter().map(|&i| self.rows[i].len()).max().unwrap_or(0);
        let (mut idx, mut mask) = (Vec::with_capacity(samples.len() * l), Vec::with_capacity(samples.len() * l));
        for &i in samples {
            let r = &self.rows[i];
            idx.extend(r.iter().copied().chain(std::iter::repeat(self.pad)).take(l));
            mask.extend((0..l).map(|j| if j < r.len() { 1f32 } else { 0.0 }));
        }
        let dev = self.table.device();
        let idx = Tensor::from_vec(idx, samples.len() * l, dev)?;
        let e = self.table.index_select(&idx, 0)?.reshape((samples.len(), l, self.table.dim(1)?))?;
        Ok((e, Tensor::from_vec(mask, (samples.len(), l), dev)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_gather_rows_and_pad_on_the_right() {
        let dev = Device::Cpu;
        let tokens = vec![vec![7, 3], vec![3], vec![9, 7, 7]];
        // Row of id k: [k, -k].
        let embed = |ids: &[u32]| Ok(ids.iter().flat_map(|&k| [k as f32, -(k as f32)]).collect());
        let t = Texts::new(&tokens, 2, embed, &dev).unwrap();
        let (e, mask) = t.batch(&[1, 0, 2]).unwrap();
        assert_eq!(e.dims(), [3, 3, 2]);
        let e: Vec<Vec<Vec<f32>>> = e.to_vec3().unwrap();
        assert_eq!(e[0], [[3.0, -3.0], [0.0, 0.0], [0.0, 0.0]]);
        assert_eq!(e[1], [[7.0, -7.0], [3.0, -3.0], [0.0, 0.0]]);
        assert_eq!(e[2], [[9.0, -9.0], [7.0, -7.0], [7.0, -7.0]]);
        let mask: Vec<Vec<f32>> = mask.to_vec2().unwrap();
        assert_eq!(mask, [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]);
    }
}
