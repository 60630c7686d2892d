//! The simulated product catalogue: categories, items, brands and prices.
//!
//! Each category has a price level drawn log-normally (median 30, sigma 0.9); each item's price is
//! its category level times a log-normal factor (sigma 0.45), rounded to cents. Items are split
//! evenly over categories and their popularity inside a category is Zipf distributed; category
//! popularity is Zipf distributed too.

use crate::config::CatalogConfig;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Zipf};

const TOP: [&str; 12] = [
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "automotive",
    "pets",
    "office",
];
const SUB: [&str; 12] = [
    "accessories",
    "essentials",
    "premium",
    "kids",
    "outdoor",
    "classic",
    "smart",
    "travel",
    "care",
    "tools",
    "decor",
    "gifts",
];
const BRANDS: [&str; 24] = [
    "acmeco", "borealis", "cinder", "dunmore", "everline", "fjordic", "granite", "halcyon",
    "isotope", "juniper", "kestrel", "lumen", "meridian", "nimbus", "orchard", "pioneer", "quartz",
    "redwood", "solace", "tundra", "umbra", "vantage", "willow", "zephyr",
];

/// Zipf exponent of item popularity inside a category.
const ITEM_ZIPF_S: f64 = 1.07;
/// Zipf exponent of category popularity.
const CATEGORY_ZIPF_S: f64 = 0.9;

/// One item of the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub category: u32,
    pub price: f64,
    pub brand: u8,
}

/// One category: a name, a search phrase and a contiguous range of items.
#[derive(Debug, Clone)]
pub(crate) struct Category {
    pub name: String,
    pub query: String,
    first_item: u32,
    popularity: Zipf<f64>,
    len: u32,
}

/// The whole catalogue; built once per generator.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub categories: Vec<Category>,
    pub items: Vec<Item>,
    category_popularity: Zipf<f64>,
    /// Items in the top 2 % by price, for account-takeover baskets.
    pub expensive: Vec<u32>,
}

impl Catalog {
    /// Builds a catalogue; `cfg` must have been validated (at least one item per category).
    pub fn new(cfg: &CatalogConfig, rng: &mut ChaCha8Rng) -> Self {
        let n_cat = cfg.categories.max(1);
        let n_items = cfg.items.max(n_cat);
        let level = LogNormal::new(30f64.ln(), 0.9).expect("constant parameters are valid");
        let spread = LogNormal::new(0.0, 0.45).expect("constant parameters are valid");
        let mut categories = Vec::with_capacity(n_cat as usize);
        let mut items = Vec::with_capacity(n_items as usize);
        let base = n_items / n_cat;
        let extra = n_items % n_cat;
        for c in 0..n_cat {
            let top = TOP[c as usize % TOP.len()];
            let sub = SUB[(c as usize / TOP.len()) % SUB.len()];
            let round = c as usize / (TOP.len() * SUB.len());
            let name = if round == 0 {
                format!("{top}/{sub}")
            } else {
                format!("{top}/{sub}-{round}")
            };
            let len = base + u32::from(c < extra);
            let first_item = items.len() as u32;
            let cat_level: f64 = level.sample(rng);
            for _ in 0..len {
                let price = (cat_level * spread.sample(rng) * 100.0).round() / 100.0;
                items.push(Item {
                    category: c,
                    price: price.max(0.5),
                    brand: rng.random_range(0..BRANDS.len() as u8),
                });
            }
            categories.push(Category {
                name,
                query: format!("{sub} {top}"),
                first_item,
                popularity: Zipf::new(f64::from(len), ITEM_ZIPF_S).expect("len >= 1"),
                len,
            });
        }
        let mut by_price: Vec<u32> = (0..items.len() as u32).collect();
        by_price.sort_by(|a, b| {
            items[*b as usize]
                .price
                .total_cmp(&items[*a as usize].price)
        });
        by_price.truncate((items.len() / 50).max(1));
        Catalog {
            category_popularity: Zipf::new(f64::from(n_cat), CATEGORY_ZIPF_S).expect("n >= 1"),
            categories,
            items,
            expensive: by_price,
        }
    }

    /// A category drawn by global popularity.
    pub fn popular_category(&self, rng: &mut ChaCha8Rng) -> u32 {
        zipf_index(&self.category_popularity, rng, self.categories.len() as u32)
    }

    /// An item of `category`, drawn by popularity inside it.
    pub fn pick_item(&self, category: u32, rng: &mut ChaCha8Rng) -> u32 {
        let cat = &self.categories[category as usize];
        cat.first_item + zipf_index(&cat.popularity, rng, cat.len)
    }

    /// Any item, uniformly: a crawler walks the whole catalogue, not the popular part.
    pub fn uniform_item(&self, rng: &mut ChaCha8Rng) -> u32 {
        rng.random_range(0..self.items.len() as u32)
    }

    /// The item's public id.
    pub fn item_id(item: u32) -> String {
        (100_000 + u64::from(item)).to_string()
    }

    /// The item's brand name.
    pub fn brand(&self, item: u32) -> &'static str {
        BRANDS[self.items[item as usize].brand as usize]
    }
}

/// Zipf samples are floats in `[1, n]`; rank 1 becomes index 0.
fn zipf_index(z: &Zipf<f64>, rng: &mut ChaCha8Rng, n: u32) -> u32 {
    let k = z.sample(rng) as u32;
    k.clamp(1, n) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn items_are_split_over_categories_with_positive_prices() {
        let cfg = CatalogConfig {
            categories: 7,
            items: 100,
            currency: "EUR".into(),
        };
        let cat = Catalog::new(&cfg, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(cat.items.len(), 100);
        assert_eq!(cat.categories.len(), 7);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for c in 0..7 {
            for _ in 0..50 {
                let i = cat.pick_item(c, &mut rng);
                assert_eq!(cat.items[i as usize].category, c);
            }
        }
        assert!(cat.items.iter().all(|i| i.price >= 0.5));
        assert_eq!(cat.expensive.len(), 2);
        let cheapest_expensive = cat.items[cat.expensive[1] as usize].price;
        let above = cat
            .items
            .iter()
            .filter(|i| i.price > cheapest_expensive)
            .count();
        assert!(above <= 1);
    }

    #[test]
    fn category_names_stay_unique_beyond_the_word_lists() {
        let cfg = CatalogConfig {
            categories: 300,
            items: 300,
            currency: "EUR".into(),
        };
        let cat = Catalog::new(&cfg, &mut ChaCha8Rng::seed_from_u64(1));
        let mut names: Vec<_> = cat.categories.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 300);
    }
}
