//! The network: per step an event-type embedding, hashed category and item embeddings and the
//! numeric features, a GRU, LSTM or causal Transformer encoder, and its heads: purchase logit,
//! next-action logits and, when the model recommends items, an item query vector scored against
//! an output embedding of every vocabulary item (GRU4Rec-style).

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Gru, GruConfig, Linear, LinearConfig, Lstm, LstmConfig, LstmState,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::encode::{EVENT_TYPES, Step};

/// Which sequence encoder the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Gated recurrent unit: one hidden vector per user.
    Gru,
    /// Long short-term memory: hidden and cell vectors per user.
    Lstm,
    /// Causal Transformer encoder over a bounded window of recent events.
    Transformer,
}

impl Architecture {
    /// Parses `gru`, `lstm` or `transformer`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gru" => Some(Architecture::Gru),
            "lstm" => Some(Architecture::Lstm),
            "transformer" => Some(Architecture::Transformer),
            _ => None,
        }
    }

    /// The name used in configs and artifact versions.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Gru => "gru",
            Architecture::Lstm => "lstm",
            Architecture::Transformer => "transformer",
        }
    }
}

/// How the item on screen enters the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemInput {
    /// Hashed into `item_buckets` shared buckets (collisions included): works without a
    /// vocabulary, but the item is a weak signal.
    #[default]
    Hashed,
    /// By its index in the item head's vocabulary (row 0: none, or out of vocabulary), one
    /// embedding row per item: the step from the item on screen to the next one can be learned
    /// exactly, as the item-to-item baselines look it up. Needs an item head.
    Vocabulary,
}

impl ItemInput {
    fn is_hashed(&self) -> bool {
        *self == ItemInput::Hashed
    }
}

/// Shape of the network; saved in the artifact beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Encoder kind. Default GRU.
    pub architecture: Architecture,
    /// Hidden size (recurrent state or Transformer model width). Default 64.
    pub hidden: usize,
    /// Width of the event-type embedding. Default 8.
    pub type_embedding: usize,
    /// Hashed category buckets (bucket 0: none). Default 512.
    pub category_buckets: usize,
    /// Width of the category embedding. Default 8.
    pub category_embedding: usize,
    /// Hashed item buckets (bucket 0: none). Default 4096.
    pub item_buckets: usize,
    /// Width of the item embedding. Default 8.
    pub item_embedding: usize,
    /// How the current item is embedded. Default hashed (left out of `model.json` then, so
    /// artifacts of hashed models read as before).
    #[serde(skip_serializing_if = "ItemInput::is_hashed")]
    pub item_input: ItemInput,
    /// Number of numeric features per step (set from the feature spec at training time).
    pub numeric_features: usize,
    /// Transformer: layers. Default 2.
    pub transformer_layers: usize,
    /// Transformer: attention heads (must divide `hidden`). Default 4.
    pub transformer_heads: usize,
    /// Transformer: the window of recent events re-scored per event (and the number of
    /// learned positions). Default 32.
    pub window: usize,
    /// Items the item head can recommend (the training vocabulary); 0: no item head.
    pub item_vocab: usize,
    /// Width of the item head's query and output item embeddings. Default 64.
    pub item_head_width: usize,
    /// Categories the category head can recommend (the training category vocabulary); 0: no
    /// category head (every artifact written before it existed; left out of `model.json` then, so
    /// builds before the head read such artifacts as before).
    #[serde(skip_serializing_if = "is_zero")]
    pub category_vocab: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            architecture: Architecture::Gru,
            hidden: 64,
            type_embedding: 8,
            category_buckets: 512,
            category_embedding: 8,
            item_buckets: 4096,
            item_embedding: 8,
            item_input: ItemInput::Hashed,
            numeric_features: 0,
            transformer_layers: 2,
            transformer_heads: 4,
            window: 32,
            item_vocab: 0,
            item_head_width: 64,
            category_vocab: 0,
        }
    }
}

impl NetConfig {
    /// Width of one step's input vector.
    pub fn input_width(&self) -> usize {
        self.type_embedding + self.category_embedding + self.item_embedding + self.numeric_features
    }

    /// Checks the shape; returns every problem found.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.hidden == 0 {
            p.push("hidden must be > 0".to_string());
        }
        if self.item_vocab > 0 && self.item_head_width == 0 {
            p.push("item_head_width must be > 0 with an item head".to_string());
        }
        if self.category_buckets < 2 || self.item_buckets < 2 {
            p.push("category_buckets and item_buckets must be >= 2".to_string());
        }
        if self.architecture == Architecture::Transformer {
            if self.transformer_heads == 0 || !self.hidden.is_multiple_of(self.transformer_heads) {
                p.push(format!(
                    "transformer_heads ({}) must divide hidden ({})",
                    self.transformer_heads, self.hidden
                ));
            }
            if self.window == 0 || self.transformer_layers == 0 {
                p.push("window and transformer_layers must be > 0".to_string());
            }
        }
        p
    }

    /// Rows of the item input embedding: the hashed buckets, or the vocabulary and row 0.
    pub fn item_input_rows(&self) -> usize {
        match self.item_input {
            ItemInput::Hashed => self.item_buckets,
            ItemInput::Vocabulary => self.item_vocab + 1,
        }
    }

    /// Floats of recurrent state per user (0 for the Transformer, which keeps a window of
    /// steps instead).
    pub fn state_width(&self) -> usize {
        match self.architecture {
            Architecture::Gru => self.hidden,
            Architecture::Lstm => 2 * self.hidden,
            Architecture::Transformer => 0,
        }
    }

    /// Builds a freshly initialised network on `device`. Burn initialises parameters lazily,
    /// and each clone of a lazy parameter draws its own values; the record round trip makes the
    /// weights concrete, so clones of the returned network share them.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SequenceNet<B> {
        let record = self.init_lazy::<B>(device).into_record();
        self.init_lazy::<B>(device).load_record(record)
    }

    fn init_lazy<B: Backend>(&self, device: &B::Device) -> SequenceNet<B> {
        let d_in = self.input_width();
        let h = self.hidden;
        let (mut gru, mut lstm, mut tf_in, mut tf_pos, mut tf) = (None, None, None, None, None);
        match self.architecture {
            Architecture::Gru => gru = Some(GruConfig::new(d_in, h, true).init(device)),
            Architecture::Lstm => lstm = Some(LstmConfig::new(d_in, h, true).init(device)),
            Architecture::Transformer => {
                tf_in = Some(LinearConfig::new(d_in, h).init(device));
                tf_pos = Some(EmbeddingConfig::new(self.window, h).init(device));
                tf = Some(
                    TransformerEncoderConfig::new(
                        h,
                        2 * h,
                        self.transformer_heads,
                        self.transformer_layers,
                    )
                    .with_dropout(0.1)
                    .with_norm_first(true)
                    .init(device),
                );
            }
        }
        SequenceNet {
            type_emb: EmbeddingConfig::new(EVENT_TYPES, self.type_embedding).init(device),
            category_emb: EmbeddingConfig::new(self.category_buckets, self.category_embedding)
                .init(device),
            item_emb: EmbeddingConfig::new(self.item_input_rows(), self.item_embedding)
                .init(device),
            gru,
            lstm,
            tf_in,
            tf_pos,
            tf,
            // The heads read the encoder's output and, as a skip connection, the step's own
            // inputs: a linear model of the current features is then always within reach.
            purchase_head: LinearConfig::new(h + d_in, 1).init(device),
            next_head: LinearConfig::new(h + d_in, EVENT_TYPES).init(device),
            item_query: (self.item_vocab > 0)
                .then(|| LinearConfig::new(h + d_in, self.item_head_width).init(device)),
            item_out: (self.item_vocab > 0)
                .then(|| EmbeddingConfig::new(self.item_vocab, self.item_head_width).init(device)),
            item_bias: (self.item_vocab > 0)
                .then(|| EmbeddingConfig::new(self.item_vocab, 1).init(device)),
            // A full softmax: a catalogue has hundreds or a few thousand categories, not 50 K.
            category_head: (self.category_vocab > 0)
                .then(|| LinearConfig::new(h + d_in, self.category_vocab).init(device)),
        }
    }
}

/// The sequence model. Exactly one of the encoders is present.
#[derive(Module, Debug)]
pub struct SequenceNet<B: Backend> {
    type_emb: Embedding<B>,
    category_emb: Embedding<B>,
    item_emb: Embedding<B>,
    gru: Option<Gru<B>>,
    lstm: Option<Lstm<B>>,
    tf_in: Option<Linear<B>>,
    tf_pos: Option<Embedding<B>>,
    tf: Option<TransformerEncoder<B>>,
    purchase_head: Linear<B>,
    next_head: Linear<B>,
    /// Item head: the query vector of a step.
    item_query: Option<Linear<B>>,
    /// Item head: one output embedding per vocabulary item.
    item_out: Option<Embedding<B>>,
    /// Item head: one bias per vocabulary item (popularity).
    item_bias: Option<Embedding<B>>,
    /// Category head: next-category logits.
    category_head: Option<Linear<B>>,
}

/// The heads' outputs of a forward pass.
#[derive(Debug, Clone)]
pub struct HeadOutputs<B: Backend> {
    /// Purchase logits `[batch, time]`.
    pub purchase: Tensor<B, 2>,
    /// Next-action logits `[batch, time, types]`.
    pub next: Tensor<B, 3>,
    /// Item query vectors `[batch, time, item_head_width]` (models with an item head).
    pub item_query: Option<Tensor<B, 3>>,
    /// Next-category logits `[batch, time, category_vocab]` (models with a category head).
    pub category: Option<Tensor<B, 3>>,
}

/// Encoded steps of a batch of sequences, padded to one length.
#[derive(Debug, Clone)]
pub struct StepTensors<B: Backend> {
    /// Event types `[batch, time]`.
    pub types: Tensor<B, 2, Int>,
    /// Category buckets `[batch, time]`.
    pub categories: Tensor<B, 2, Int>,
    /// Item buckets or vocabulary rows ([`ItemInput`]) `[batch, time]`.
    pub items: Tensor<B, 2, Int>,
    /// Numeric features `[batch, time, features]`.
    pub numeric: Tensor<B, 3>,
}

impl<B: Backend> StepTensors<B> {
    /// Builds the tensors of `sequences`, padding each to `len` steps with zeros (padding sits
    /// after the real steps, so a causal encoder's outputs on real steps do not see it).
    pub fn from_steps(
        sequences: &[&[Step]],
        len: usize,
        features: usize,
        device: &B::Device,
    ) -> Self {
        let b = sequences.len();
        let mut types = vec![0i32; b * len];
        let mut cats = vec![0i32; b * len];
        let mut items = vec![0i32; b * len];
        let mut numeric = vec![0f32; b * len * features];
        for (i, seq) in sequences.iter().enumerate() {
            for (t, step) in seq.iter().take(len).enumerate() {
                let at = i * len + t;
                types[at] = step.event_type as i32;
                cats[at] = step.category as i32;
                items[at] = step.item as i32;
                numeric[at * features..(at + 1) * features]
                    .copy_from_slice(&step.numeric[..features]);
            }
        }
        StepTensors {
            types: Tensor::from_data(TensorData::new(types, [b, len]), device),
            categories: Tensor::from_data(TensorData::new(cats, [b, len]), device),
            items: Tensor::from_data(TensorData::new(items, [b, len]), device),
            numeric: Tensor::from_data(TensorData::new(numeric, [b, len, features]), device),
        }
    }
}

/// Recurrent state of a batch of users: GRU `[batch, hidden]`; LSTM hidden and cell
/// concatenated, `[batch, 2 * hidden]`.
pub type RecurrentState<B> = Tensor<B, 2>;

/// The heads' outputs of one recurrent step ([`SequenceNet::step`]).
#[derive(Debug, Clone)]
pub struct StepHeads<B: Backend> {
    /// Purchase logits, `[batch]`.
    pub purchase: Tensor<B, 1>,
    /// Next-action logits, `[batch, types]`.
    pub next: Tensor<B, 2>,
    /// The item head's queries, `[batch, item_head_width]`; `None` without an item head.
    pub item_query: Option<Tensor<B, 2>>,
    /// Next-category logits, `[batch, category_vocab]`; `None` without a category head.
    pub category: Option<Tensor<B, 2>>,
    /// The new recurrent state.
    pub state: RecurrentState<B>,
}

impl<B: Backend> SequenceNet<B> {
    fn embed(&self, x: StepTensors<B>) -> Tensor<B, 3> {
        Tensor::cat(
            vec![
                self.type_emb.forward(x.types),
                self.category_emb.forward(x.categories),
                self.item_emb.forward(x.items),
                x.numeric,
            ],
            2,
        )
    }

    fn heads(&self, h: Tensor<B, 3>, input: Tensor<B, 3>) -> HeadOutputs<B> {
        let z = Tensor::cat(vec![h, input], 2);
        HeadOutputs {
            purchase: self.purchase_head.forward(z.clone()).squeeze_dim::<2>(2),
            next: self.next_head.forward(z.clone()),
            item_query: self.item_query.as_ref().map(|q| q.forward(z.clone())),
            category: self.category_head.as_ref().map(|c| c.forward(z)),
        }
    }

    /// Full forward pass: purchase logits `[batch, time]` and next-action logits
    /// `[batch, time, types]`, causal (step `t` sees steps `0..=t` only).
    pub fn forward(&self, x: StepTensors<B>) -> (Tensor<B, 2>, Tensor<B, 3>) {
        let out = self.forward_heads(x);
        (out.purchase, out.next)
    }

    /// Whether the network has an item head.
    pub fn has_item_head(&self) -> bool {
        self.item_query.is_some()
    }

    /// Whether the network has a category head.
    pub fn has_category_head(&self) -> bool {
        self.category_head.is_some()
    }

    /// Scores of `items` (vocabulary indices, `[n]`) for the queries `[rows, width]`:
    /// `[rows, n]`, the dot product with each item's output embedding plus its bias.
    ///
    /// # Panics
    /// On a network without an item head.
    pub fn item_scores(&self, queries: Tensor<B, 2>, items: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let (Some(out), Some(bias)) = (&self.item_out, &self.item_bias) else {
            panic!("item_scores on a network without an item head");
        };
        let n = items.dims()[0];
        let emb = out
            .forward(items.clone().reshape([1, n]))
            .squeeze_dim::<2>(0);
        let b = bias.forward(items.reshape([1, n])).reshape([1, n]);
        queries.matmul(emb.transpose()) + b
    }

    /// Scores of every vocabulary item for the queries `[rows, width]`: `[rows, item_vocab]`. Reads the
    /// output embedding's weight directly (no gather of all its rows, unlike [`SequenceNet::item_scores`]
    /// with every index).
    ///
    /// # Panics
    /// On a network without an item head.
    pub fn all_item_scores(&self, queries: Tensor<B, 2>) -> Tensor<B, 2> {
        let (Some(out), Some(bias)) = (&self.item_out, &self.item_bias) else {
            panic!("all_item_scores on a network without an item head");
        };
        let weight = out.weight.val();
        let n = weight.dims()[0];
        let b = bias.weight.val().reshape([1, n]);
        queries.matmul(weight.transpose()) + b
    }

    /// The item head's output embeddings `[item_vocab, width]` and biases `[item_vocab]`, row
    /// `i` for vocabulary item `i`; `None` without an item head.
    pub fn item_output(&self) -> Option<(Tensor<B, 2>, Tensor<B, 1>)> {
        let (Some(out), Some(bias)) = (&self.item_out, &self.item_bias) else {
            return None;
        };
        let n = bias.weight.dims()[0];
        Some((out.weight.val(), bias.weight.val().reshape([n])))
    }

    /// Scores of the positive item of each row (`targets`, `[rows]`) for the queries
    /// `[rows, width]`: `[rows, 1]`.
    ///
    /// # Panics
    /// On a network without an item head.
    pub fn item_target_scores(
        &self,
        queries: Tensor<B, 2>,
        targets: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        let (Some(out), Some(bias)) = (&self.item_out, &self.item_bias) else {
            panic!("item_target_scores on a network without an item head");
        };
        let n = targets.dims()[0];
        let emb = out
            .forward(targets.clone().reshape([1, n]))
            .squeeze_dim::<2>(0);
        let b = bias.forward(targets.reshape([1, n])).reshape([n, 1]);
        (queries * emb).sum_dim(1) + b
    }

    /// Full forward pass with every head's output, causal (step `t` sees steps `0..=t` only).
    pub fn forward_heads(&self, x: StepTensors<B>) -> HeadOutputs<B> {
        let input = self.embed(x);
        let h = if let Some(gru) = &self.gru {
            gru.forward(input.clone(), None)
        } else if let Some(lstm) = &self.lstm {
            lstm.forward(input.clone(), None).0
        } else {
            self.transformer(input.clone())
        };
        self.heads(h, input)
    }

    fn transformer(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let (Some(tf_in), Some(tf_pos), Some(tf)) = (&self.tf_in, &self.tf_pos, &self.tf) else {
            unreachable!("a SequenceNet holds exactly one encoder");
        };
        let device = input.device();
        let [b, t, _] = input.dims();
        let positions = Tensor::<B, 1, Int>::arange(0..t as i64, &device)
            .reshape([1, t])
            .repeat_dim(0, b);
        let z = tf_in.forward(input) + tf_pos.forward(positions);
        let mask = generate_autoregressive_mask::<B>(b, t, &device);
        tf.forward(TransformerEncoderInput::new(z).mask_attn(mask))
    }

    /// One recurrent step for a batch of users: the step inputs `[batch, 1]` and each user's
    /// state (`None`: fresh users); returns the heads' outputs for this step and the new state.
    /// GRU and LSTM only.
    pub fn step(&self, x: StepTensors<B>, state: Option<RecurrentState<B>>) -> StepHeads<B> {
        let input = self.embed(x);
        let [b, _, _] = input.dims();
        let (h_seq, new_state) = if let Some(gru) = &self.gru {
            let h_seq = gru.forward(input.clone(), state);
            let h = h_seq.clone().squeeze_dim::<2>(1);
            (h_seq, h)
        } else if let Some(lstm) = &self.lstm {
            let lstm_state = state.map(|s| {
                let hidden = s.dims()[1] / 2;
                LstmState::new(s.clone().narrow(1, hidden, hidden), s.narrow(1, 0, hidden))
            });
            let (h_seq, st) = lstm.forward(input.clone(), lstm_state);
            (h_seq, Tensor::cat(vec![st.hidden, st.cell], 1))
        } else {
            panic!(
                "SequenceNet::step is for recurrent encoders; the Transformer re-scores a window"
            );
        };
        let out = self.heads(h_seq, input);
        StepHeads {
            purchase: out.purchase.reshape([b]),
            next: out.next.reshape([b, EVENT_TYPES]),
            item_query: out.item_query.map(|q| {
                let width = q.dims()[2];
                q.reshape([b, width])
            }),
            category: out.category.map(|c| {
                let n = c.dims()[2];
                c.reshape([b, n])
            }),
            state: new_state,
        }
    }
}
