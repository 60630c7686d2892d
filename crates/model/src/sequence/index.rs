//! An inverted-file (IVF) index over the item head's output embeddings: top-k recommendations on
//! the CPU without scoring every item of a large vocabulary.
//!
//! An item's score is `query · embedding + bias`; with the bias as one more coordinate (and a 1
//! appended to the query) it is a plain inner product. The items are clustered by k-means
//! (`crate::kmeans`; `lists` clusters trained on a sample, every item then assigned to its nearest
//! centroid); a
//! query scores the centroids, scans the items of the `probe` best clusters only, and keeps the
//! best `k`. Approximate: an item in an unprobed cluster is missed, so its recall against the
//! exact scan is measured (`docs/models.md`) rather than assumed. Scores of the items it returns are
//! exact. Vocabularies below [`IndexConfig::min_items`] are scanned exactly instead.
//!
//! A graph index ([`GraphIndex`], [`IndexConfig::graph_degree`]) is the other kind of [`ItemSearch`]:
//! at the same share of the vocabulary scored it keeps far more of the exact list (docs/models.md).
//!
//! Experimental: on trained models the probed lists keep only a third to a half of the exact top
//! 20 (docs/models.md), so the scorer never serves them. A head of the items with the largest
//! bias, scanned on every query ([`IndexConfig::head`]), was tried too: at the same number of items
//! scanned it keeps less than probing more lists (docs/models.md), so it is off by default. A norm-completion transform (one more
//! coordinate `sqrt(M² - |x|²)`, making the best inner product the nearest neighbour; Bachrach et al.
//! 2014) was tried and kept less (46 % and 33 % against 53 % and 38 %).

use super::graph_index::GraphIndex;

/// How the index is built and searched.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexConfig {
    /// Smallest vocabulary worth an index; smaller ones are scanned exactly. Default 4 096.
    pub min_items: usize,
    /// Clusters; 0: the square root of the clustered items (the vocabulary less the head).
    /// Default 0.
    pub lists: usize,
    /// Clusters scanned per query; 0: an eighth of the clusters, at least 8. Default 0.
    pub probe: usize,
    /// Items with the largest bias, kept out of the clusters and scanned on every query (the
    /// popular-item head: on trained models the bias carries much of the score, and a cluster of
    /// directions does not follow it). Default 0 (none).
    pub head: usize,
    /// Most k-means (Lloyd) iterations. Default 10.
    pub iterations: usize,
    /// Items sampled per cluster to train the centroids (FAISS uses about 40). Default 40.
    pub sample_per_list: usize,
    /// Seed of the k-means++ seeding (and of the graph's insertion order). Default 7.
    pub seed: u64,
    /// Graph index instead of inverted lists ([`super::graph_index`]): neighbours linked per item
    /// on insertion. 0: inverted lists. Default 0.
    pub graph_degree: usize,
    /// Graph index: items kept while searching (at least the list's length). Default 64.
    pub graph_ef: usize,
    /// Graph index: items kept while searching for an inserted item's neighbours. Default 100.
    pub graph_build_ef: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            min_items: 4_096,
            lists: 0,
            probe: 0,
            head: 0,
            iterations: 10,
            sample_per_list: 40,
            seed: 7,
            graph_degree: 0,
            graph_ef: 64,
            graph_build_ef: 100,
        }
    }
}

/// The inverted-file index (see the module docs).
#[derive(Debug, Clone)]
pub struct ItemIndex {
    /// Coordinates per item: the embedding width plus the bias.
    dim: usize,
    /// `lists × dim` centroids.
    centroids: Vec<f32>,
    /// Start of each cluster in `ids` / `vectors` (`lists + 1` entries).
    offsets: Vec<usize>,
    /// Item indices, cluster after cluster.
    ids: Vec<u32>,
    /// The items' augmented vectors in the order of `ids`.
    vectors: Vec<f32>,
    probe: usize,
    /// The head's item indices (largest bias first) and their augmented vectors.
    head_ids: Vec<u32>,
    head_vectors: Vec<f32>,
}

/// Each item's embedding with its bias appended (`n × (width + 1)`): with a 1 appended to the query,
/// an item's score is a plain inner product.
pub(super) fn augmented(embeddings: &[f32], biases: &[f32], width: usize) -> Vec<f32> {
    let mut points = Vec::with_capacity(biases.len() * (width + 1));
    for (row, &b) in embeddings.chunks_exact(width).zip(biases) {
        points.extend_from_slice(row);
        points.push(b);
    }
    points
}

/// The item head's `query` with a 1 appended: its inner product with an [`augmented`] item is the
/// item's score.
pub(super) fn augmented_query(query: &[f32]) -> Vec<f32> {
    let mut q = Vec::with_capacity(query.len() + 1);
    q.extend_from_slice(query);
    q.push(1.0);
    q
}

/// Inner product, in eight independent lanes so the compiler vectorises it.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Index of the centroid with the smallest squared L2 distance to `x` (`|c|² - 2 x·c`).
fn nearest(x: &[f32], centroids: &[f32], norms: &[f32], dim: usize) -> usize {
    let mut best = (0, f32::INFINITY);
    for (c, (centroid, norm)) in centroids.chunks_exact(dim).zip(norms).enumerate() {
        let d = norm - 2.0 * dot(x, centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best.0
}

impl ItemIndex {
    /// Builds the index of `embeddings` (`n × width`, row `i` for item `i`) and `biases` (`n`);
    /// `None` when the vocabulary is below `cfg.min_items` (scan it exactly).
    pub fn build(
        embeddings: &[f32],
        biases: &[f32],
        width: usize,
        cfg: &IndexConfig,
    ) -> Option<Self> {
        let n = biases.len();
        if n < cfg.min_items.max(2) || width == 0 || embeddings.len() != n * width {
            return None;
        }
        let dim = width + 1;
        let points = augmented(embeddings, biases, width);
        let point = |i: usize| &points[i * dim..(i + 1) * dim];
        // The head: the largest biases (ties by lower index), scanned on every query; the rest,
        // in index order (the vocabulary is in popularity order), is clustered.
        let head = cfg.head.min(n - 1);
        let mut by_bias: Vec<u32> = (0..n as u32).collect();
        by_bias.sort_by(|&a, &b| {
            biases[b as usize]
                .total_cmp(&biases[a as usize])
                .then(a.cmp(&b))
        });
        let head_ids = by_bias[..head].to_vec();
        let mut rest = by_bias[head..].to_vec();
        rest.sort_unstable();
        let m = rest.len();
        let head_vectors: Vec<f32> = head_ids
            .iter()
            .flat_map(|&i| point(i as usize).iter().copied())
            .collect();
        let lists = if cfg.lists == 0 {
            (m as f64).sqrt().round() as usize
        } else {
            cfg.lists
        }
        .clamp(1, m);
        // The centroids: the workspace's k-means on an evenly spread sample of the items (in
        // popularity order, so a stride samples every popularity band).
        let sample = (lists * cfg.sample_per_list.max(1)).min(m);
        let sample: Vec<Vec<f64>> = (0..sample)
            .map(|j| {
                point(rest[j * m / sample] as usize)
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            })
            .collect();
        let centroids: Vec<f32> =
            crate::kmeans::fit_iterations(&sample, lists, cfg.seed, cfg.iterations)
                .iter()
                .flatten()
                .map(|&x| x as f32)
                .collect();
        let lists = centroids.len() / dim;
        // Every clustered item to its nearest centroid, stored cluster after cluster.
        let norm: Vec<f32> = centroids.chunks_exact(dim).map(|c| dot(c, c)).collect();
        let cluster: Vec<usize> = rest
            .iter()
            .map(|&i| nearest(point(i as usize), &centroids, &norm, dim))
            .collect();
        let mut offsets = vec![0usize; lists + 1];
        for &c in &cluster {
            offsets[c + 1] += 1;
        }
        for c in 0..lists {
            offsets[c + 1] += offsets[c];
        }
        let mut fill = offsets.clone();
        let mut ids = vec![0u32; m];
        let mut vectors = vec![0f32; m * dim];
        for (&i, &c) in rest.iter().zip(&cluster) {
            let at = fill[c];
            fill[c] += 1;
            ids[at] = i;
            vectors[at * dim..(at + 1) * dim].copy_from_slice(point(i as usize));
        }
        let probe = if cfg.probe == 0 {
            (lists / 8).max(8)
        } else {
            cfg.probe
        }
        .min(lists);
        Some(ItemIndex {
            dim,
            centroids,
            offsets,
            ids,
            vectors,
            probe,
            head_ids,
            head_vectors,
        })
    }

    /// Number of clusters.
    pub fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Clusters scanned per query.
    pub fn probe(&self) -> usize {
        self.probe
    }

    /// The `k` best items for `query` (the item head's query, `width` floats) among the head and
    /// the probed clusters, with their exact scores, best first; ties by lower item index.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        if k == 0 || query.len() + 1 != self.dim {
            return Vec::new();
        }
        let q = augmented_query(query);
        let lists: Vec<f32> = self
            .centroids
            .chunks_exact(self.dim)
            .map(|c| dot(&q, c))
            .collect();
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        let mut scan = |ids: &[u32], vectors: &[f32]| {
            for (&id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
                let s = dot(&q, v);
                if best.len() == k && !better((id, s), best[k - 1]) {
                    continue;
                }
                let at = best.partition_point(|&b| better(b, (id, s)));
                best.insert(at, (id, s));
                best.truncate(k);
            }
        };
        scan(&self.head_ids, &self.head_vectors);
        for (list, _) in super::top_k_scored(&lists, self.probe) {
            let (from, to) = (self.offsets[list as usize], self.offsets[list as usize + 1]);
            scan(
                &self.ids[from..to],
                &self.vectors[from * self.dim..to * self.dim],
            );
        }
        best
    }

    /// Items in the head (scanned on every query).
    pub fn head(&self) -> usize {
        self.head_ids.len()
    }
}

/// The item head's approximate top-k search: inverted lists ([`ItemIndex`]) or a proximity graph
/// ([`GraphIndex`]), as [`IndexConfig::graph_degree`] says.
#[derive(Debug, Clone)]
pub enum ItemSearch {
    /// Inverted lists over k-means clusters.
    Lists(ItemIndex),
    /// A proximity graph searched by score.
    Graph(GraphIndex),
}

impl ItemSearch {
    /// Builds the configured index of `embeddings` (`n × width`) and `biases` (`n`); `None` below
    /// `cfg.min_items` items (scan them exactly).
    pub fn build(
        embeddings: &[f32],
        biases: &[f32],
        width: usize,
        cfg: &IndexConfig,
    ) -> Option<Self> {
        if cfg.graph_degree == 0 {
            return ItemIndex::build(embeddings, biases, width, cfg).map(ItemSearch::Lists);
        }
        if biases.len() < cfg.min_items.max(2) {
            return None;
        }
        GraphIndex::build(
            embeddings,
            biases,
            width,
            cfg.graph_degree,
            cfg.graph_build_ef,
            cfg.graph_ef,
            cfg.seed,
        )
        .map(ItemSearch::Graph)
    }

    /// The `k` best items for `query` that the index finds, exact scores, best first.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        match self {
            ItemSearch::Lists(i) => i.top_k(query, k),
            ItemSearch::Graph(g) => g.top_k(query, k),
        }
    }

    /// How the index searches, for reports.
    pub fn describe(&self) -> String {
        match self {
            ItemSearch::Lists(i) => format!(
                "{} lists, {} probed, head of {}",
                i.lists(),
                i.probe(),
                i.head()
            ),
            ItemSearch::Graph(g) => format!(
                "graph, degree {}, ef {}, {} links, {:.0} of {} items scored per query",
                g.degree(),
                g.ef(),
                g.edges(),
                g.mean_scored(),
                g.items()
            ),
        }
    }
}

/// Whether `a` ranks before `b`: a higher score, or an equal one and a lower index.
pub(super) fn better(a: (u32, f32), b: (u32, f32)) -> bool {
    match a.1.total_cmp(&b.1) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => a.0 < b.0,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `n` items in `groups` well-separated groups of `width`-wide embeddings, and their biases.
    pub(crate) fn clustered(
        n: usize,
        width: usize,
        groups: usize,
        seed: u64,
    ) -> (Vec<f32>, Vec<f32>) {
        let mut rng = crate::logistic::SplitMix64(seed);
        let mut unit = move || rng.next_f64() as f32 - 0.5;
        let centres: Vec<Vec<f32>> = (0..groups)
            .map(|_| (0..width).map(|_| 4.0 * unit()).collect())
            .collect();
        let mut emb = Vec::with_capacity(n * width);
        let mut bias = Vec::with_capacity(n);
        for i in 0..n {
            let c = &centres[i % groups];
            emb.extend(c.iter().map(|v| v + 0.3 * unit()));
            bias.push(0.1 * unit());
        }
        (emb, bias)
    }

    pub(crate) fn exact(
        emb: &[f32],
        bias: &[f32],
        width: usize,
        q: &[f32],
        k: usize,
    ) -> Vec<(u32, f32)> {
        let scores: Vec<f32> = emb
            .chunks_exact(width)
            .zip(bias)
            .map(|(e, b)| dot(q, e) + b)
            .collect();
        super::super::top_k_scored(&scores, k)
    }

    #[test]
    fn small_vocabularies_are_scanned_exactly() {
        let (emb, bias) = clustered(100, 8, 4, 1);
        assert!(ItemIndex::build(&emb, &bias, 8, &IndexConfig::default()).is_none());
    }

    #[test]
    fn probing_every_list_is_the_exact_scan() {
        let (emb, bias) = clustered(3_000, 16, 30, 2);
        let cfg = IndexConfig {
            min_items: 1,
            lists: 40,
            probe: 40,
            ..IndexConfig::default()
        };
        let index = ItemIndex::build(&emb, &bias, 16, &cfg).unwrap();
        assert_eq!((index.lists(), index.probe()), (40, 40));
        let (q, _) = clustered(5, 16, 5, 3);
        for query in q.chunks_exact(16) {
            let got = index.top_k(query, 20);
            let want = exact(&emb, &bias, 16, query, 20);
            assert_eq!(got.len(), 20);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0);
                assert!((g.1 - w.1).abs() < 1e-4, "{g:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn the_head_holds_the_largest_biases_whatever_the_probed_lists() {
        let (emb, mut bias) = clustered(3_000, 16, 30, 6);
        // Item 7 gets a bias that puts it first for every query. (Without a head, k-means gives
        // such an outlier a cluster of its own, which every query probes first: the head is for
        // the many large biases that do not stand out like this.)
        bias[7] = 100.0;
        let cfg = |head| IndexConfig {
            min_items: 1,
            lists: 40,
            probe: 1,
            head,
            ..IndexConfig::default()
        };
        let (queries, _) = clustered(20, 16, 20, 7);
        let found = |index: &ItemIndex| {
            queries
                .chunks_exact(16)
                .filter(|q| index.top_k(q, 20).first().map(|x| x.0) == Some(7))
                .count()
        };
        let with = ItemIndex::build(&emb, &bias, 16, &cfg(1)).unwrap();
        assert_eq!(with.head_ids, vec![7]);
        assert_eq!(found(&with), 20, "first for every query");
        // The head's items are not also in a list: probing every list with a head is still the
        // exact scan, each item once.
        let every = ItemIndex::build(
            &emb,
            &bias,
            16,
            &IndexConfig {
                probe: 40,
                head: 100,
                ..cfg(0)
            },
        )
        .unwrap();
        // The head is the 100 largest biases (ties by lower index), and every item is in the
        // head or in one list, once.
        let mut by_bias: Vec<u32> = (0..3_000).collect();
        by_bias.sort_by(|&a, &b| {
            bias[b as usize]
                .total_cmp(&bias[a as usize])
                .then(a.cmp(&b))
        });
        assert_eq!(every.head_ids, by_bias[..100]);
        let mut all: Vec<u32> = every.head_ids.iter().chain(&every.ids).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..3_000).collect::<Vec<u32>>());
        for q in queries.chunks_exact(16) {
            let got: Vec<u32> = every.top_k(q, 20).iter().map(|x| x.0).collect();
            let want: Vec<u32> = exact(&emb, &bias, 16, q, 20).iter().map(|x| x.0).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_few_probed_lists_find_most_of_the_exact_top_k_on_clustered_items() {
        let (emb, bias) = clustered(20_000, 32, 100, 4);
        let index = ItemIndex::build(&emb, &bias, 32, &IndexConfig::default()).unwrap();
        // sqrt(20 000) lists, an eighth of them probed.
        assert_eq!((index.lists(), index.probe()), (141, 17));
        let (queries, _) = clustered(50, 32, 50, 5);
        let (mut found, mut total) = (0, 0);
        for query in queries.chunks_exact(32) {
            let got: Vec<u32> = index.top_k(query, 20).iter().map(|x| x.0).collect();
            let want = exact(&emb, &bias, 32, query, 20);
            total += want.len();
            found += want.iter().filter(|w| got.contains(&w.0)).count();
        }
        let recall = found as f64 / total as f64;
        assert!(recall > 0.9, "recall@20 against the exact scan {recall}");
    }
}
