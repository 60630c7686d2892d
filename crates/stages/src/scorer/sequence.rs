//! The sequence-model side of the scorer: per-user memories, micro-batched steps, predictions
//! with a predicted path and occlusion factors.

use std::collections::HashMap;

use clickpath_core::session::SessionConfig;
use clickpath_model::recommend::without_current;
use clickpath_model::sequence::encode::{Buckets, EVENT_TYPES, encode_step};
use clickpath_model::sequence::{OnlineModel, Step, StepOutput, UserMemory, top_k_probabilities};
use clickpath_schema::{
    ActionProbability, EventType, Factor, FeatureVector, RecommendedCategory, RecommendedItem,
};

/// A loaded sequence model and its version.
pub struct LoadedSequence {
    /// The model (CPU or CUDA).
    pub model: Box<dyn OnlineModel>,
    /// Its artifact version (`gru-…`).
    pub version: String,
    /// The session rules it was trained with (`meta.json`): training and evaluation start every
    /// session from an empty state, so a user's memory starts fresh at each new session online too.
    pub session: SessionConfig,
}

impl LoadedSequence {
    /// Whether an event at `t` opens a new session after the user's last event at `last` (by the
    /// model's session rules; `None`: not known, the memory is kept).
    pub fn starts_session(&self, last: Option<i64>, t: i64) -> bool {
        last.is_some_and(|last| !self.session.continues(last, last, t))
    }

    fn buckets(&self) -> Buckets<'_> {
        Buckets::of(self.model.config(), self.model.item_vocab())
    }

    /// Encodes a feature vector as this model's step.
    pub fn encode(&self, fv: &FeatureVector) -> Step {
        encode_step(
            self.buckets(),
            self.model.normalizer(),
            fv.event_type,
            fv.item_id.as_deref(),
            fv.category.as_deref(),
            &fv.values,
        )
    }

    /// Checks the model answers with finite probabilities on a neutral step (before a swap).
    pub fn smoke_test(&self) -> Result<(), String> {
        let step = Step {
            event_type: 0,
            category: 0,
            item: 0,
            numeric: vec![0.0; self.model.normalizer().len()],
        };
        let mut mem = UserMemory::default();
        let out = self.model.step_batch(&mut [(&step, &mut mem)]);
        match out.first() {
            Some(o) if o.purchase.is_finite() && o.next.iter().all(|p| p.is_finite()) => Ok(()),
            _ => Err("the model's outputs on a neutral step are not finite".into()),
        }
    }
}

/// One event waiting in a micro-batch.
pub struct Queued {
    /// The input.
    pub fv: FeatureVector,
    /// Its encoded step.
    pub step: Step,
    /// Memory before the event (taken from the user's state; empty when the event opens a session).
    pub memory: UserMemory,
    /// Whether the event opens a new session of its user: it starts from an empty memory, not from
    /// the one an earlier event of the same batch leaves.
    pub new_session: bool,
    /// Event time of the user's event before this one, when known (a shadow model judges the new
    /// session by its own rules).
    pub last_event: Option<i64>,
    /// Category vocabulary index of the category on screen, or of the last one before it in the
    /// session: never recommended as the next category.
    pub shown_category: Option<u32>,
    /// Whether to compute decision factors for it.
    pub explain: bool,
    /// Vocabulary indices of items never to recommend for it besides its own (what the user
    /// bought lately).
    pub exclude: Vec<u32>,
    /// The trace headers of its input record, for its prediction (scored after the record).
    pub trace: Option<clickpath_runtime::trace_context::TraceHeaders>,
}

/// What the model says about one queued event.
pub struct Scored {
    /// Outputs after the event.
    pub output: StepOutput,
    /// Memory after the event.
    pub memory: UserMemory,
    /// Most likely next event types, greedy.
    pub path: Vec<EventType>,
    /// Occlusion factors (empty unless asked).
    pub factors: Vec<Factor>,
    /// Recommended next items, best first (empty unless asked and the model has an item head).
    pub items: Vec<RecommendedItem>,
    /// Recommended next categories, best first (empty unless asked and the model has a category
    /// head).
    pub categories: Vec<RecommendedCategory>,
}

/// What [`score_batch`] computes besides each event's step outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    /// Steps of the greedy predicted path.
    pub path_steps: usize,
    /// Decision factors kept per explained event.
    pub factors: usize,
    /// Items recommended per event (top-k of the item head).
    pub items: usize,
    /// Categories recommended per event (top-k of the category head).
    pub categories: usize,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// The `k` most likely next actions.
pub fn top_actions(next: &[f64], k: usize) -> Vec<ActionProbability> {
    let mut idx: Vec<usize> = (0..next.len().min(EVENT_TYPES)).collect();
    idx.sort_by(|a, b| next[*b].total_cmp(&next[*a]));
    idx.into_iter()
        .take(k)
        .map(|i| ActionProbability {
            event_type: EventType::ALL[i],
            probability: next[i],
        })
        .collect()
}

/// Scores a batch of queued events in one model call per round. Events of the same user go in
/// successive rounds, in arrival order, each starting from the memory the previous left.
/// `extras.path_steps` greedy steps of the predicted path are rolled out from each new memory; events
/// marked `explain` get occlusion factors (the purchase log-odds change when one input of the
/// current step is blanked: its event type, item, category or one numeric feature); every event gets
/// the item head's `extras.items` best items, all events' in one scoring call.
pub fn score_batch(model: &LoadedSequence, mut queued: Vec<Queued>, extras: Extras) -> Vec<Scored> {
    // Rounds: the n-th event of each user in this batch goes in round n.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let rounds: Vec<usize> = queued
        .iter()
        .map(|q| {
            let r = seen.entry(q.fv.user_id.as_str()).or_insert(0);
            *r += 1;
            *r - 1
        })
        .collect();
    let n_rounds = rounds.iter().copied().max().map_or(0, |m| m + 1);
    let mut outputs: Vec<Option<StepOutput>> = (0..queued.len()).map(|_| None).collect();
    let mut carried: HashMap<String, UserMemory> = HashMap::new();
    let mut before: Vec<UserMemory> = Vec::with_capacity(queued.len());
    for q in &queued {
        before.push(q.memory.clone());
    }
    for round in 0..n_rounds {
        let members: Vec<usize> = (0..queued.len()).filter(|&i| rounds[i] == round).collect();
        // A later event of a user starts from the memory its previous event left.
        for &i in &members {
            if let Some(m) = carried.remove(&queued[i].fv.user_id)
                && !queued[i].new_session
            {
                queued[i].memory = m.clone();
                before[i] = m;
            }
        }
        let mut mems: Vec<UserMemory> = members.iter().map(|&i| queued[i].memory.clone()).collect();
        let outs = {
            let mut items: Vec<(&Step, &mut UserMemory)> = members
                .iter()
                .zip(mems.iter_mut())
                .map(|(&i, m)| (&queued[i].step, m))
                .collect();
            model.model.step_batch(&mut items)
        };
        for ((&i, out), mem) in members.iter().zip(outs).zip(mems) {
            outputs[i] = Some(out);
            carried.insert(queued[i].fv.user_id.clone(), mem.clone());
            queued[i].memory = mem;
        }
    }
    let paths = rollout(model, &queued, &outputs, extras.path_steps);
    let mut all_factors = explain(model, &queued, &before, &outputs, extras.factors);
    let items = recommend(model, &queued, &outputs, extras.items);
    let mut categories = recommend_categories(model, &queued, &outputs, extras.categories);
    queued
        .into_iter()
        .zip(outputs)
        .zip(paths)
        .zip(items)
        .enumerate()
        .map(|(i, (((q, out), path), items))| Scored {
            output: out.unwrap_or(StepOutput {
                purchase: 0.0,
                next: vec![0.0; EVENT_TYPES],
                item_query: Vec::new(),
                categories: Vec::new(),
            }),
            memory: q.memory,
            path,
            factors: all_factors.remove(&i).unwrap_or_default(),
            items,
            categories: std::mem::take(&mut categories[i]),
        })
        .collect()
}

/// The `k` most probable next categories of each output's category head, leaving out the category
/// on screen or, for an event without one (a search, a checkout), the session's last (the next
/// category is another one by definition, as the evaluation counts); empty lists for a model
/// without a category head.
fn recommend_categories(
    model: &LoadedSequence,
    queued: &[Queued],
    outputs: &[Option<StepOutput>],
    k: usize,
) -> Vec<Vec<RecommendedCategory>> {
    let mut result = vec![Vec::new(); outputs.len()];
    let Some(vocab) = model.model.category_vocab().filter(|_| k > 0) else {
        return result;
    };
    for (i, out) in outputs.iter().enumerate() {
        let Some(logits) = out.as_ref().map(|o| o.categories.as_slice()) else {
            continue;
        };
        let best = without_current(
            top_k_probabilities(logits, k + 1),
            |&(index, _)| index,
            queued[i].shown_category,
            k,
        );
        result[i] = best
            .into_iter()
            .filter_map(|(index, probability)| {
                vocab.item(index).map(|category| RecommendedCategory {
                    category: category.to_string(),
                    probability,
                })
            })
            .collect();
    }
    result
}

/// The `k` best items of each output's item query, by item id, leaving out the event's own item (the
/// shopper is looking at it: `without_current`) and the items the user bought lately (`exclude`);
/// empty lists for a model without an item head (its outputs have no query).
fn recommend(
    model: &LoadedSequence,
    queued: &[Queued],
    outputs: &[Option<StepOutput>],
    k: usize,
) -> Vec<Vec<RecommendedItem>> {
    let mut result = vec![Vec::new(); outputs.len()];
    let Some(vocab) = model.model.item_vocab() else {
        return result;
    };
    let asked: Vec<(usize, &[f32])> = outputs
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|o| (i, o.item_query.as_slice())))
        .filter(|(_, q)| !q.is_empty())
        .collect();
    if k == 0 || asked.is_empty() {
        return result;
    }
    // One scan for all: deep enough that the longest exclusion list still leaves k.
    let skipped = asked
        .iter()
        .map(|(i, _)| queued[*i].exclude.len())
        .max()
        .unwrap_or(0);
    let queries: Vec<&[f32]> = asked.iter().map(|(_, q)| *q).collect();
    for ((i, _), best) in asked
        .iter()
        .zip(model.model.top_items(&queries, k + 1 + skipped))
    {
        let q = &queued[*i];
        let current = q.fv.item_id.as_deref().and_then(|id| vocab.get(id));
        let kept = best
            .into_iter()
            .filter(|(index, _)| !q.exclude.contains(index))
            .collect();
        result[*i] = without_current(kept, |&(index, _)| index, current, k)
            .into_iter()
            .filter_map(|(index, score)| {
                vocab.item(index).map(|item| RecommendedItem {
                    item_id: item.to_string(),
                    score: f64::from(score),
                })
            })
            .collect();
    }
    result
}

/// Greedy predicted paths: the most likely next type, fed back as the next step (item,
/// category and features carried over from the current event), `steps` times.
fn rollout(
    model: &LoadedSequence,
    queued: &[Queued],
    outputs: &[Option<StepOutput>],
    steps: usize,
) -> Vec<Vec<EventType>> {
    let mut paths: Vec<Vec<EventType>> = vec![Vec::new(); queued.len()];
    if steps == 0 {
        return paths;
    }
    let mut next: Vec<usize> = outputs
        .iter()
        .map(|o| o.as_ref().map_or(0, |o| argmax(&o.next)))
        .collect();
    let mut mems: Vec<UserMemory> = queued.iter().map(|q| q.memory.clone()).collect();
    for (p, n) in paths.iter_mut().zip(&next) {
        p.push(EventType::ALL[*n]);
    }
    for _ in 1..steps {
        let hypothetical: Vec<Step> = queued
            .iter()
            .zip(&next)
            .map(|(q, n)| Step {
                event_type: *n as u32,
                ..q.step.clone()
            })
            .collect();
        let outs = {
            let mut items: Vec<(&Step, &mut UserMemory)> =
                hypothetical.iter().zip(mems.iter_mut()).collect();
            model.model.step_batch(&mut items)
        };
        for ((p, n), o) in paths.iter_mut().zip(next.iter_mut()).zip(outs) {
            *n = argmax(&o.next);
            p.push(EventType::ALL[*n]);
        }
    }
    paths
}

/// Occlusion factors for the events marked `explain`, all variants in one model call.
fn explain(
    model: &LoadedSequence,
    queued: &[Queued],
    before: &[UserMemory],
    outputs: &[Option<StepOutput>],
    keep: usize,
) -> HashMap<usize, Vec<Factor>> {
    let mut result = HashMap::new();
    if keep == 0 {
        return result;
    }
    let names = &model.model.normalizer().names;
    let mut variants: Vec<(usize, String, Step, UserMemory)> = Vec::new();
    for (i, q) in queued.iter().enumerate() {
        if !q.explain {
            continue;
        }
        let s = &q.step;
        let ty = EventType::ALL[(s.event_type as usize).min(EVENT_TYPES - 1)];
        let mut push = |name: String, step: Step| variants.push((i, name, step, before[i].clone()));
        push(
            format!("event_type={}", ty.as_str()),
            Step {
                event_type: EventType::PageView.index() as u32,
                ..s.clone()
            },
        );
        if s.item != 0 {
            push(
                "item".into(),
                Step {
                    item: 0,
                    ..s.clone()
                },
            );
        }
        if s.category != 0 {
            push(
                "category".into(),
                Step {
                    category: 0,
                    ..s.clone()
                },
            );
        }
        for (j, name) in names.iter().enumerate() {
            if s.numeric[j] != 0.0 {
                let mut numeric = s.numeric.clone();
                numeric[j] = 0.0; // the training mean
                push(
                    name.clone(),
                    Step {
                        numeric,
                        ..s.clone()
                    },
                );
            }
        }
    }
    if variants.is_empty() {
        return result;
    }
    let outs = {
        let mut mems: Vec<UserMemory> = variants.iter().map(|v| v.3.clone()).collect();
        let mut items: Vec<(&Step, &mut UserMemory)> =
            variants.iter().map(|v| &v.2).zip(mems.iter_mut()).collect();
        model.model.step_batch(&mut items)
    };
    let mut per_event: HashMap<usize, Vec<Factor>> = HashMap::new();
    for ((i, name, _, _), o) in variants.into_iter().zip(outs) {
        let full = outputs[i].as_ref().map_or(0.5, |o| o.purchase);
        per_event.entry(i).or_default().push(Factor {
            name,
            contribution: logit(full) - logit(o.purchase),
        });
    }
    for (i, mut f) in per_event {
        f.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        f.truncate(keep);
        result.insert(i, f);
    }
    result
}
