//! How long the item head's graph index takes to build over 50 000 random 64-wide items (degree 16,
//! build width 100: what `scorer.item_index = "graph"` pays when a model loads or hot-swaps).
//!
//! `cargo run --release -p clickpath-model --features sequence --example graph_build_time`

use clickpath_model::sequence::graph_index::GraphIndex;

fn main() {
    let (n, width) = (50_000usize, 64usize);
    // xorshift64: a fixed, dependency-free stream of values in [-0.5, 0.5).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let embeddings: Vec<f32> = (0..n * width).map(|_| next()).collect();
    let biases: Vec<f32> = (0..n).map(|_| next() * 0.1).collect();
    let started = std::time::Instant::now();
    let g = GraphIndex::build(&embeddings, &biases, width, 16, 100, 64, 7).expect("items to index");
    println!(
        "built a graph of {} items, {} links, in {:.2} s",
        g.items(),
        g.edges(),
        started.elapsed().as_secs_f64()
    );
}
