//! A proximity-graph index over the item head's output embeddings for maximum inner-product search
//! (after ip-NSW: Morozov and Babenko, "Non-metric Similarity Graphs for Maximum Inner Product
//! Search", NeurIPS 2018): the graph is searched with the score itself, `query · embedding + bias`
//! (the bias as one more coordinate), rather than a distance, so no norm-completion transform is
//! needed.
//!
//! Build: the items are inserted in a seeded random order. Each is linked by *direction* (the cosine
//! of the augmented vectors): a beam search of width `build_ef` among the items already in the graph
//! finds its closest, HNSW's neighbour selection keeps up to `degree` of them that are closer to it
//! than to one another, and they link back (a list longer than `2 × degree` is selected again the
//! same way). Linked by score, items of small norm were nobody's neighbour and could not be reached;
//! without the selection a cluster's items linked only among themselves. Search: best-first from the
//! entry item (the largest augmented norm: the best answer for many queries), keeping the `ef` best
//! items seen, until no candidate left can beat the worst of them. Approximate like the inverted
//! lists ([`super::index`]): what it keeps of the exact top k is measured (`clickpath evaluate
//! --item-index --item-index-graph-degree D`, docs/models.md). Hand-written because the graph crates
//! for Rust (`hnsw_rs`, `instant-distance`) search metric distances, and the item head's scores are
//! inner products with a bias.

use super::index::{augmented, augmented_query, dot};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A scored item, ordered as [`super::index::better`] ranks (a higher score, then a lower index, is greater).
#[derive(Debug, Clone, Copy)]
struct Scored(f32, u32);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The graph index (see the module docs).
#[derive(Debug)]
pub struct GraphIndex {
    /// Coordinates per item: the embedding width plus the bias.
    dim: usize,
    /// The items' augmented vectors, row `i` for item `i`.
    vectors: Vec<f32>,
    /// Each item's neighbours.
    links: Vec<Vec<u32>>,
    entry: u32,
    degree: usize,
    ef: usize,
    /// Queries answered and items scored for them: the search's cost, for reports.
    queries: AtomicU64,
    scored: AtomicU64,
}

impl Clone for GraphIndex {
    /// A copy of the graph; its cost counts start at zero.
    fn clone(&self) -> Self {
        GraphIndex {
            dim: self.dim,
            vectors: self.vectors.clone(),
            links: self.links.clone(),
            entry: self.entry,
            degree: self.degree,
            ef: self.ef,
            queries: AtomicU64::new(0),
            scored: AtomicU64::new(0),
        }
    }
}

impl GraphIndex {
    /// Builds the graph of `embeddings` (`n × width`, row `i` for item `i`) and `biases` (`n`);
    /// `None` without items or with a `degree` of 0.
    pub fn build(
        embeddings: &[f32],
        biases: &[f32],
        width: usize,
        degree: usize,
        build_ef: usize,
        ef: usize,
        seed: u64,
    ) -> Option<Self> {
        let n = biases.len();
        if n == 0 || degree == 0 || width == 0 || embeddings.len() != n * width {
            return None;
        }
        let dim = width + 1;
        let vectors = augmented(embeddings, biases, width);
        let norms: Vec<f32> = vectors
            .chunks_exact(dim)
            .map(|v| dot(v, v).sqrt())
            .collect();
        let entry = (0..n)
            .max_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(b.cmp(&a)))
            .unwrap_or(0) as u32;
        // The links follow directions (cosine), not scores: an item of small norm is nobody's best
        // inner product, and a graph linked by score leaves it unreachable.
        let unit: Vec<f32> = vectors
            .chunks_exact(dim)
            .zip(&norms)
            .flat_map(|(v, &norm)| {
                v.iter()
                    .map(move |x| if norm > 0.0 { x / norm } else { 0.0 })
            })
            .collect();
        let mut order: Vec<u32> = (0..n as u32).filter(|&i| i != entry).collect();
        let mut rng = crate::logistic::SplitMix64(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_f64() * (i + 1) as f64) as usize % (i + 1));
        }
        let mut graph = GraphIndex {
            dim,
            vectors,
            links: vec![Vec::new(); n],
            entry,
            degree,
            ef: ef.max(1),
            queries: AtomicU64::new(0),
            scored: AtomicU64::new(0),
        };
        let mut visited = Visited::new();
        for &item in &order {
            // The item's own vector is the query: its best-scoring neighbours are what a query
            // near it will want next.
            let query = &unit[item as usize * dim..][..dim];
            let found = graph.search(query, &unit, build_ef.max(degree), &mut visited);
            let found: Vec<Scored> = found.into_iter().filter(|s| s.1 != item).collect();
            let neighbours = diverse(query, &found, degree, &unit, dim);
            for &m in &neighbours {
                graph.link(m, item, &unit);
            }
            graph.links[item as usize] = neighbours;
        }
        Some(graph)
    }

    /// Adds `to` to `from`'s neighbours, keeping the `2 × degree` closest in direction to `from`.
    fn link(&mut self, from: u32, to: u32, unit: &[f32]) {
        let dim = self.dim;
        let list = &mut self.links[from as usize];
        list.push(to);
        if list.len() > 2 * self.degree {
            let v = &unit[from as usize * dim..][..dim];
            let mut scored: Vec<Scored> = list
                .iter()
                .map(|&m| Scored(dot(v, &unit[m as usize * dim..][..dim]), m))
                .collect();
            scored.sort_unstable_by(|a, b| b.cmp(a));
            *list = diverse(v, &scored, 2 * self.degree, unit, dim);
        }
    }

    /// Best-first search from the entry item keeping the `ef` best items seen (best first), each
    /// scored by its inner product with `query` in `vectors`.
    fn search(
        &self,
        query: &[f32],
        vectors: &[f32],
        ef: usize,
        visited: &mut Visited,
    ) -> Vec<Scored> {
        let dim = self.dim;
        visited.start(self.links.len());
        let score = |i: u32| Scored(dot(query, &vectors[i as usize * dim..][..dim]), i);
        let start = score(self.entry);
        visited.insert(self.entry);
        // Candidates to expand, best first; the best `ef` so far, worst on top.
        let mut candidates = BinaryHeap::from([start]);
        let mut best = BinaryHeap::from([std::cmp::Reverse(start)]);
        while let Some(c) = candidates.pop() {
            if best.len() >= ef && best.peek().is_some_and(|w| c < w.0) {
                break;
            }
            for &m in &self.links[c.1 as usize] {
                if !visited.insert(m) {
                    continue;
                }
                let s = score(m);
                if best.len() < ef || best.peek().is_some_and(|w| s > w.0) {
                    candidates.push(s);
                    best.push(std::cmp::Reverse(s));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        let mut out: Vec<Scored> = best.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// The `k` best items for `query` (the item head's query, `width` floats) that the search
    /// reaches, with their exact scores, best first; ties by lower item index.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        if k == 0 || query.len() + 1 != self.dim {
            return Vec::new();
        }
        let q = augmented_query(query);
        let (found, seen) = VISITED.with_borrow_mut(|visited| {
            let found = self.search(&q, &self.vectors, self.ef.max(k), visited);
            (found, visited.seen)
        });
        self.queries.fetch_add(1, Relaxed);
        self.scored.fetch_add(seen as u64, Relaxed);
        found.into_iter().take(k).map(|s| (s.1, s.0)).collect()
    }

    /// Most neighbours an item links to when inserted.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Items kept during a search (the beam width).
    pub fn ef(&self) -> usize {
        self.ef
    }

    /// Items scored per query so far, on average (0 before the first).
    pub fn mean_scored(&self) -> f64 {
        let q = self.queries.load(Relaxed);
        if q == 0 {
            return 0.0;
        }
        self.scored.load(Relaxed) as f64 / q as f64
    }

    /// Items in the graph.
    pub fn items(&self) -> usize {
        self.links.len()
    }

    /// Links in the graph, all items together.
    pub fn edges(&self) -> usize {
        self.links.iter().map(Vec::len).sum()
    }
}

/// HNSW's neighbour selection (Malkov and Yashunin 2018, algorithm 4): of `candidates` (closest in
/// direction to `base` first) a candidate is kept if it is no closer to any one kept before it than
/// to `base`, up to `m`. Without it a cluster's items link only among themselves and a search that
/// starts in another cluster never reaches them. Ties keep the candidate, so duplicate vectors still
/// get links. (An all-zero vector has no direction and may stay unreachable; a trained item head,
/// with its bias, has none.) (Filling the slots left with the closest of
/// the others, HNSW's `keepPrunedConnections`, was tried: lists full of a cluster's own items kept
/// half as much of the exact top 20 in the test below.)
fn diverse(base: &[f32], candidates: &[Scored], m: usize, unit: &[f32], dim: usize) -> Vec<u32> {
    let at = |i: u32| &unit[i as usize * dim..][..dim];
    let mut kept: Vec<u32> = Vec::with_capacity(m);
    for c in candidates {
        if kept.len() == m {
            break;
        }
        let to_base = dot(base, at(c.1));
        if kept.iter().all(|&k| dot(at(c.1), at(k)) <= to_base) {
            kept.push(c.1);
        }
    }
    kept
}

/// Items seen by one search: a mark per item, the search's number when it was seen, so that a new
/// search starts by counting up rather than clearing the marks.
struct Visited {
    marks: Vec<u32>,
    search: u32,
    /// Items marked by the current search.
    seen: usize,
}

impl Visited {
    fn new() -> Self {
        Visited {
            marks: Vec::new(),
            search: 0,
            seen: 0,
        }
    }

    /// Starts a search over `n` items.
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.search = self.search.wrapping_add(1);
        if self.search == 0 {
            self.marks.fill(0);
            self.search = 1;
        }
        self.seen = 0;
    }

    /// Marks `i`; false when this search marked it already.
    fn insert(&mut self, i: u32) -> bool {
        let mark = &mut self.marks[i as usize];
        if *mark == self.search {
            return false;
        }
        *mark = self.search;
        self.seen += 1;
        true
    }
}

thread_local! {
    /// Each thread's marks, reused by its searches (a vocabulary of 50 000 items would otherwise
    /// allocate and zero 200 KB per query).
    static VISITED: std::cell::RefCell<Visited> = std::cell::RefCell::new(Visited::new());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::index::better;
    use crate::sequence::index::tests::{clustered, exact};

    /// The items no path of links leads to from the entry.
    fn unreachable(g: &GraphIndex) -> Vec<usize> {
        let mut reached = vec![false; g.items()];
        let mut stack = vec![g.entry];
        reached[g.entry as usize] = true;
        while let Some(i) = stack.pop() {
            for &m in &g.links[i as usize] {
                if !std::mem::replace(&mut reached[m as usize], true) {
                    stack.push(m);
                }
            }
        }
        (0..g.items()).filter(|&i| !reached[i]).collect()
    }

    #[test]
    fn a_wide_search_finds_the_exact_top_k() {
        let (emb, bias) = clustered(2_000, 8, 20, 3);
        let g = GraphIndex::build(&emb, &bias, 8, 16, 64, 2_000, 7).unwrap();
        let mut rng = crate::logistic::SplitMix64(11);
        for _ in 0..20 {
            let q: Vec<f32> = (0..8).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
            let want = exact(&emb, &bias, 8, &q, 10);
            let got = g.top_k(&q, 10);
            assert_eq!(
                got.iter().map(|x| x.0).collect::<Vec<_>>(),
                want.iter().map(|x| x.0).collect::<Vec<_>>()
            );
            for ((_, a), (_, b)) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "scores are exact: {a} vs {b}");
            }
        }
    }

    #[test]
    fn a_narrow_search_finds_most_of_the_exact_top_k_and_links_every_item() {
        let (emb, bias) = clustered(5_000, 16, 50, 5);
        let kept = |ef: usize| {
            let g = GraphIndex::build(&emb, &bias, 16, 16, 64, ef, 7).unwrap();
            assert!(g.links.iter().all(|l| l.len() <= 32), "lists are pruned");
            assert_eq!(unreachable(&g), Vec::<usize>::new(), "every item reachable");
            let mut rng = crate::logistic::SplitMix64(13);
            let (mut kept, mut total) = (0, 0);
            for _ in 0..50 {
                let q: Vec<f32> = (0..16).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
                let want: Vec<u32> = exact(&emb, &bias, 16, &q, 20).iter().map(|x| x.0).collect();
                let got = g.top_k(&q, 20);
                assert_eq!(got.len(), 20);
                assert!(got.windows(2).all(|w| better(w[0], w[1])), "best first");
                kept += got.iter().filter(|x| want.contains(&x.0)).count();
                total += want.len();
            }
            let scored = g.mean_scored();
            assert!(
                scored > 0.0 && scored < 0.3 * 5_000.0,
                "{scored} items scored per query"
            );
            kept as f64 / total as f64
        };
        // A random list of 20 of 5 000 would hold 0.4 % of the exact one.
        let (narrow, wide) = (kept(64), kept(256));
        assert!(narrow > 0.8, "kept {narrow}");
        assert!(
            wide > narrow && wide > 0.95,
            "a wider search keeps more: {wide} vs {narrow}"
        );
    }

    #[test]
    fn duplicate_vectors_stay_reachable() {
        // Ten copies of each of 50 vectors.
        let (base, base_bias) = clustered(50, 8, 5, 9);
        let (mut emb, mut bias) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            emb.extend_from_slice(&base);
            bias.extend_from_slice(&base_bias);
        }
        let g = GraphIndex::build(&emb, &bias, 8, 8, 32, 600, 7).unwrap();
        let q = vec![0.5; 8];
        let want: Vec<u32> = exact(&emb, &bias, 8, &q, 30).iter().map(|x| x.0).collect();
        let got: Vec<u32> = g.top_k(&q, 30).iter().map(|x| x.0).collect();
        assert_eq!(
            got, want,
            "a search as wide as the vocabulary finds every copy"
        );
        let lost = unreachable(&g);
        assert_eq!(lost, Vec::<usize>::new(), "every copy reachable");
        assert_eq!(g.mean_scored(), 500.0, "and scored once");
    }

    #[test]
    fn nothing_to_index_builds_nothing() {
        assert!(GraphIndex::build(&[], &[], 8, 16, 64, 64, 7).is_none());
        let (emb, bias) = clustered(10, 4, 2, 1);
        assert!(GraphIndex::build(&emb, &bias, 4, 0, 64, 64, 7).is_none());
        let g = GraphIndex::build(&emb, &bias, 4, 4, 8, 8, 7).unwrap();
        assert!(
            g.top_k(&[0.0; 3], 5).is_empty(),
            "a query of the wrong width"
        );
        assert!(g.top_k(&[0.0; 4], 0).is_empty());
    }
}
