use super::baselines::{ItemKnn, ItemMarkov, Popularity};
use super::*;
use clickpath_schema::EventType;

const MIN: i64 = 60_000;

fn view(id: usize, user: &str, item: &str, at: i64) -> ClickEvent {
    let mut ev = ClickEvent::new(format!("e{id}"), user, EventType::ProductView, at);
    ev.item_id = Some(item.to_string());
    ev
}

fn session(key: &str, items: &[&str]) -> ItemSession {
    ItemSession {
        key: key.into(),
        start: 0,
        items: items.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn item_sessions_collapse_repeats_and_sort_by_start() {
    let mut events = vec![
        view(1, "u2", "x", 5 * MIN),
        view(2, "u1", "a", 0),
        view(3, "u1", "a", MIN), // a view, then the same item again: one step
        view(4, "u1", "b", 2 * MIN),
        view(5, "u1", "a", 3 * MIN), // a again after b: a step
        ClickEvent::new("e6", "u3", EventType::Search, MIN), // no item: an empty session
    ];
    events.reverse();
    let s = item_sessions(&events, &SessionConfig::default());
    let items: Vec<Vec<&str>> = s
        .iter()
        .map(|s| s.items.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(items, [vec!["a", "b", "a"], vec![], vec!["x"]]);
    assert_eq!((s[0].start, s[1].start, s[2].start), (0, MIN, 5 * MIN));
}

#[test]
fn vocabulary_keeps_frequent_items_in_popularity_order() {
    let train = [
        session("s1", &["a", "b", "c"]),
        session("s2", &["b", "c", "d"]),
        session("s3", &["c", "b"]),
    ];
    let v = ItemVocab::fit(&train, 2);
    // b and c 3 times (tie broken by id), a and d once: out.
    assert_eq!(v.items, ["b", "c"]);
    assert_eq!(v.counts, [3, 3]);
    assert_eq!(v.encode(&session("t", &["a", "c"])), [None, Some(1)]);
}

#[test]
fn markov_ranks_successors_by_count_then_fills_with_popular_items() {
    let train = [
        session("s1", &["a", "b"]),
        session("s2", &["a", "b"]),
        session("s3", &["a", "c"]),
        session("s4", &["d", "e", "d", "e"]),
    ];
    let v = ItemVocab::fit(&train, 1);
    let m = ItemMarkov::fit(&v, &train);
    let names = |ids: Vec<u32>| -> Vec<String> {
        ids.into_iter()
            .map(|i| v.items[i as usize].clone())
            .collect()
    };
    let a = v.get("a");
    assert_eq!(names(m.recommend(&[a], 2)), ["b", "c"]);
    // Then the most popular items not already listed (a 3, then b/d/e 2, by id).
    assert_eq!(names(m.recommend(&[a], 4)), ["b", "c", "a", "d"]);
    // An out-of-vocabulary last item: popularity alone.
    assert_eq!(
        names(m.recommend(&[a, None], 3)),
        names(Popularity::fit(&v).recommend(&[], 3))
    );
}

#[test]
fn knn_uses_cosine_of_session_sets() {
    // b shares 2 of its 2 sessions with a; c shares 1 of its 3 sessions with a.
    let train = [
        session("s1", &["a", "b"]),
        session("s2", &["b", "a"]),
        session("s3", &["a", "c"]),
        session("s4", &["c", "x"]),
        session("s5", &["c", "y"]),
    ];
    let v = ItemVocab::fit(&train, 1);
    let knn = ItemKnn::fit(&v, &train);
    let top = knn.recommend(&[v.get("a")], 2);
    assert_eq!(top, [v.get("b").unwrap(), v.get("c").unwrap()]);
}

struct Fixed(Vec<u32>);

impl NextItem for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    fn recommend(&self, _: &[Option<u32>], k: usize) -> Vec<u32> {
        self.0.iter().take(k).copied().collect()
    }
}

#[test]
fn recall_and_mrr_count_in_vocabulary_targets_only() {
    let v = ItemVocab::from_parts(vec!["a".into(), "b".into(), "c".into()], vec![3, 2, 1]);
    // The list is always a, b, c, less the item on screen. Targets: b after a (rank 1: a is left
    // out), zz (out of vocabulary: no case), c after zz (rank 3: outside k = 2), a after c (rank 1).
    let test = [session("t", &["a", "b", "zz", "c", "a"])];
    let m = evaluate_next_item(&Fixed(vec![0, 1, 2]), &v, &test, 2);
    assert_eq!(m.cases, 3);
    assert!((m.recall - 2.0 / 3.0).abs() < 1e-12, "{m:?}");
    assert!((m.mrr - (1.0 + 1.0) / 3.0).abs() < 1e-12, "{m:?}");
}

/// Every user walks a fixed cycle of items, each starting at a different point: the next item
/// is a function of the current one, which the Markov chain learns exactly and popularity
/// cannot.
#[test]
fn baselines_on_a_stream_where_the_next_item_follows_the_current_one() {
    let cycle = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"];
    let mut events = Vec::new();
    for u in 0..200usize {
        for step in 0..6 {
            let item = cycle[(u + step) % cycle.len()];
            events.push(view(
                events.len(),
                &format!("u{u}"),
                item,
                (u as i64 * 60 + step as i64) * MIN,
            ));
        }
    }
    let cfg = RecommendConfig {
        k: 1,
        ..RecommendConfig::default()
    };
    let rows = compare_baselines(&events, &cfg, None).unwrap();
    let get = |name: &str| rows.iter().find(|r| r.model.starts_with(name)).unwrap();
    let markov = get("item Markov");
    assert_eq!(markov.cases, 30 * 5);
    assert_eq!((markov.recall, markov.mrr), (1.0, 1.0));
    assert!(get("popularity").recall < 0.3, "{rows:?}");
}

#[test]
fn too_few_items_is_an_error() {
    let events = vec![view(0, "u", "a", 0), view(1, "u", "b", MIN)];
    let err = compare_baselines(&events, &RecommendConfig::default(), None).unwrap_err();
    assert!(err.to_string().contains("no item occurs 5 times"), "{err}");
}
