//! Solving the session model's free parameters so that the funnel ratios hit their targets.
//!
//! An ordinary session has purchase probability `p`, bought with probability `p`:
//! - a buying session views `1 + Geometric` products (mean `vb`), puts the one it buys in the
//!   cart and each other viewed product with probability `cb`;
//! - a non-buying session views `Geometric` products (mean `vn`, possibly none) and puts each in
//!   the cart with probability `k * (BASE + p)`, so high-intent browsers abandon more carts.
//!
//! With `pi = E[p]` over sessions and `q = E[p (1 - p)]`, one `PURCHASE` per buying session gives
//! `E[carts] = pi / purchase_per_cart` and `E[views] = E[carts] / cart_per_product_view`; the
//! non-buyer parameters `vn` and `k` follow in closed form. `pi` and `q` are computed from the
//! actual users (not the Beta mean), so the ratios hold for the drawn population, not just on
//! average over seeds.

use crate::config::{BehaviourConfig, ConfigError, FunnelConfig};

/// Session "moods" multiplying a user's intent, with their weights (mean multiplier 1).
pub(crate) const SESSION_MOODS: [(f64, f64); 3] = [(0.5, 0.25), (1.0, 0.5), (1.5, 0.25)];
/// Ceiling of a session's purchase probability.
pub(crate) const MAX_SESSION_P: f64 = 0.95;
/// Share of a non-buyer's cart propensity that does not depend on intent.
const NONBUYER_CART_BASE: f64 = 0.05;
/// Preferred probability that a buyer also carts a product other than the one bought.
const BUYER_EXTRA_CART: f64 = 0.1;

/// Purchase probability of a session of a user with `intent` in a session of `mood`.
pub(crate) fn session_probability(intent: f64, mood: f64) -> f64 {
    (intent * mood).clamp(0.0, MAX_SESSION_P)
}

/// The solved parameters of the session model (see the module docs).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Mean purchase probability of an ordinary session for this user population.
    pub purchase_rate: f64,
    /// Mean product views of a buying session.
    pub buyer_mean_views: f64,
    /// Probability that a buyer carts a viewed product other than the one bought.
    pub buyer_extra_cart_probability: f64,
    /// Mean product views of a non-buying session.
    pub nonbuyer_mean_views: f64,
    /// Scale `k` of a non-buyer's cart probability `k * (0.05 + p)`.
    pub nonbuyer_cart_scale: f64,
}

impl Calibration {
    /// Solves the parameters for users with the given latent intents.
    pub fn solve(
        intents: impl Iterator<Item = f64>,
        behaviour: &BehaviourConfig,
        funnel: &FunnelConfig,
    ) -> Result<Self, ConfigError> {
        let (mut n, mut pi, mut q) = (0usize, 0.0, 0.0);
        for intent in intents {
            n += 1;
            for (mood, w) in SESSION_MOODS {
                let p = session_probability(intent, mood);
                pi += w * p;
                q += w * p * (1.0 - p);
            }
        }
        if n == 0 {
            return Err(ConfigError::Calibration("there are no users".into()));
        }
        pi /= n as f64;
        q /= n as f64;
        if pi <= 0.0 {
            return Err(ConfigError::Calibration(
                "the users' purchase intent is zero".into(),
            ));
        }
        let r1 = funnel.cart_per_product_view;
        let r2 = funnel.purchase_per_cart;
        let vb = behaviour.buyer_mean_product_views;
        let carts = pi / r2;
        let views = carts / r1;
        // A buyer's carts may not exceed 1 / r2 on average, or non-buyers would need negative carts.
        let cb = if vb > 1.0 {
            BUYER_EXTRA_CART.min(((1.0 / r2) - 1.0) / (vb - 1.0))
        } else {
            0.0
        };
        let buyer_carts = 1.0 + cb * (vb - 1.0);
        let nonbuyer_carts = ((carts - pi * buyer_carts) / (1.0 - pi)).max(0.0);
        let vn = (views - pi * vb) / (1.0 - pi);
        if vn < 0.0 {
            return Err(ConfigError::Calibration(format!(
                "buyers alone would view {:.2} products per session but the target is {views:.2}; \
                 lower behaviour.buyer_mean_product_views or funnel.cart_per_product_view",
                pi * vb
            )));
        }
        let mean_propensity = NONBUYER_CART_BASE + q / (1.0 - pi);
        let k = if nonbuyer_carts > 0.0 {
            if vn <= 0.0 {
                return Err(ConfigError::Calibration(
                    "non-buyers must cart but view no products".into(),
                ));
            }
            nonbuyer_carts / (vn * mean_propensity)
        } else {
            0.0
        };
        if k * (NONBUYER_CART_BASE + MAX_SESSION_P) > 1.0 {
            return Err(ConfigError::Calibration(format!(
                "non-buyers would need a cart probability above 1 (scale {k:.3}); \
                 lower funnel.cart_per_product_view"
            )));
        }
        Ok(Calibration {
            purchase_rate: pi,
            buyer_mean_views: vb,
            buyer_extra_cart_probability: cb,
            nonbuyer_mean_views: vn,
            nonbuyer_cart_scale: k,
        })
    }

    /// Probability that a non-buyer with session probability `p` carts a viewed product.
    pub fn nonbuyer_cart_probability(&self, p: f64) -> f64 {
        (self.nonbuyer_cart_scale * (NONBUYER_CART_BASE + p)).clamp(0.0, 1.0)
    }

    /// Expected `ADD_TO_CART` per `PRODUCT_VIEW` implied by the solution (for self-checks).
    pub fn implied_cart_per_view(&self, intents: &[f64]) -> f64 {
        let (c, v) = self.implied_counts(intents);
        c / v
    }

    /// Expected `PURCHASE` per `ADD_TO_CART` implied by the solution (for self-checks).
    pub fn implied_purchase_per_cart(&self, intents: &[f64]) -> f64 {
        let (c, _) = self.implied_counts(intents);
        self.purchase_rate / c
    }

    /// Expected carts and views per session, summed session by session rather than in closed form.
    fn implied_counts(&self, intents: &[f64]) -> (f64, f64) {
        let (mut carts, mut views) = (0.0, 0.0);
        for &intent in intents {
            for (mood, w) in SESSION_MOODS {
                let p = session_probability(intent, mood);
                let buyer_carts =
                    1.0 + self.buyer_extra_cart_probability * (self.buyer_mean_views - 1.0);
                let nonbuyer_carts = self.nonbuyer_cart_probability(p) * self.nonbuyer_mean_views;
                carts += w * (p * buyer_carts + (1.0 - p) * nonbuyer_carts);
                views += w * (p * self.buyer_mean_views + (1.0 - p) * self.nonbuyer_mean_views);
            }
        }
        let n = intents.len() as f64;
        (carts / n, views / n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Summing session by session reproduces the targets the closed form solved for.
        #[test]
        fn solution_reproduces_targets(
            intents in proptest::collection::vec(0.0f64..0.8, 1..200),
            r1 in 0.005f64..0.2,
            r2 in 0.05f64..1.0,
            vb in 1.0f64..20.0,
        ) {
            prop_assume!(intents.iter().any(|&p| p > 0.001));
            let behaviour = BehaviourConfig { buyer_mean_product_views: vb, ..Default::default() };
            let funnel = FunnelConfig { cart_per_product_view: r1, purchase_per_cart: r2 };
            if let Ok(c) = Calibration::solve(intents.iter().copied(), &behaviour, &funnel) {
                let got1 = c.implied_cart_per_view(&intents);
                let got2 = c.implied_purchase_per_cart(&intents);
                prop_assert!((got1 - r1).abs() < 1e-9 * r1.max(1.0) + 1e-12, "{got1} vs {r1}");
                prop_assert!((got2 - r2).abs() < 1e-6 * r2, "{got2} vs {r2}");
            }
        }
    }

    #[test]
    fn defaults_are_feasible() {
        let intents = [0.01, 0.02, 0.05, 0.1, 0.3];
        let c = Calibration::solve(
            intents.iter().copied(),
            &BehaviourConfig::default(),
            &FunnelConfig::default(),
        )
        .unwrap();
        assert!(c.nonbuyer_mean_views > 0.0);
        assert!(c.nonbuyer_cart_scale > 0.0);
    }

    #[test]
    fn impossible_targets_are_refused() {
        let funnel = FunnelConfig {
            cart_per_product_view: 0.9,
            purchase_per_cart: 0.9,
        };
        let behaviour = BehaviourConfig {
            buyer_mean_product_views: 20.0,
            ..Default::default()
        };
        let r = Calibration::solve([0.5, 0.6].into_iter(), &behaviour, &funnel);
        assert!(matches!(r, Err(ConfigError::Calibration(_))), "{r:?}");
    }
}
