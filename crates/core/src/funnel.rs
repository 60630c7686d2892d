//! The purchase funnel: which stage an event type belongs to, and compressed event paths.

use clickpath_schema::{EventType, FunnelStage};

/// The funnel stage an event of type `t` reaches.
///
/// `PAGE_VIEW`, `SEARCH`, `LOGIN`, `WISHLIST` are browsing; `PRODUCT_VIEW` is a product view;
/// `ADD_TO_CART` and `REMOVE_FROM_CART` are cart activity; `BEGIN_CHECKOUT` and `PAYMENT_ATTEMPT`
/// are checkout; `PURCHASE` is a purchase.
pub fn funnel_stage(t: EventType) -> FunnelStage {
    match t {
        EventType::PageView | EventType::Search | EventType::Login | EventType::Wishlist => {
            FunnelStage::Browse
        }
        EventType::ProductView => FunnelStage::ProductView,
        EventType::AddToCart | EventType::RemoveFromCart => FunnelStage::Cart,
        EventType::BeginCheckout | EventType::PaymentAttempt => FunnelStage::Checkout,
        EventType::Purchase => FunnelStage::Purchase,
    }
}

/// A configurable funnel: the stage each event type reaches. Every field defaults to
/// [`funnel_stage`]'s answer, so a config names only the types it moves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FunnelMap {
    /// Stage of `PAGE_VIEW`.
    pub page_view: FunnelStage,
    /// Stage of `PRODUCT_VIEW`.
    pub product_view: FunnelStage,
    /// Stage of `SEARCH`.
    pub search: FunnelStage,
    /// Stage of `ADD_TO_CART`.
    pub add_to_cart: FunnelStage,
    /// Stage of `REMOVE_FROM_CART`.
    pub remove_from_cart: FunnelStage,
    /// Stage of `WISHLIST`.
    pub wishlist: FunnelStage,
    /// Stage of `BEGIN_CHECKOUT`.
    pub begin_checkout: FunnelStage,
    /// Stage of `PAYMENT_ATTEMPT`.
    pub payment_attempt: FunnelStage,
    /// Stage of `PURCHASE`.
    pub purchase: FunnelStage,
    /// Stage of `LOGIN`.
    pub login: FunnelStage,
}

impl Default for FunnelMap {
    fn default() -> Self {
        FunnelMap {
            page_view: funnel_stage(EventType::PageView),
            product_view: funnel_stage(EventType::ProductView),
            search: funnel_stage(EventType::Search),
            add_to_cart: funnel_stage(EventType::AddToCart),
            remove_from_cart: funnel_stage(EventType::RemoveFromCart),
            wishlist: funnel_stage(EventType::Wishlist),
            begin_checkout: funnel_stage(EventType::BeginCheckout),
            payment_attempt: funnel_stage(EventType::PaymentAttempt),
            purchase: funnel_stage(EventType::Purchase),
            login: funnel_stage(EventType::Login),
        }
    }
}

impl FunnelMap {
    /// The stage an event of type `t` reaches.
    pub fn stage(&self, t: EventType) -> FunnelStage {
        match t {
            EventType::PageView => self.page_view,
            EventType::ProductView => self.product_view,
            EventType::Search => self.search,
            EventType::AddToCart => self.add_to_cart,
            EventType::RemoveFromCart => self.remove_from_cart,
            EventType::Wishlist => self.wishlist,
            EventType::BeginCheckout => self.begin_checkout,
            EventType::PaymentAttempt => self.payment_attempt,
            EventType::Purchase => self.purchase,
            EventType::Login => self.login,
        }
    }
}

/// Appends `next` to `path` unless it repeats the last element, then keeps only the last
/// `max_len` elements (the end of a path says most about what happens next).
///
/// Dropping from the front costs O(`max_len`) per overflowing push; paths are short (tens).
pub fn compress_path(path: &mut Vec<EventType>, next: EventType, max_len: usize) {
    if path.last() == Some(&next) {
        return;
    }
    path.push(next);
    if path.len() > max_len {
        let excess = path.len() - max_len;
        path.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_map_is_the_standard_funnel_and_overrides_apply() {
        let d = FunnelMap::default();
        for t in EventType::ALL {
            assert_eq!(d.stage(t), funnel_stage(t));
        }
        let m: FunnelMap = serde_json::from_str(r#"{"wishlist": "CART"}"#).unwrap();
        assert_eq!(m.stage(EventType::Wishlist), FunnelStage::Cart);
        assert_eq!(m.stage(EventType::PageView), FunnelStage::Browse);
        assert!(serde_json::from_str::<FunnelMap>(r#"{"wishlst": "CART"}"#).is_err());
    }
    use EventType::*;

    #[test]
    fn stages_follow_the_funnel() {
        let expected = [
            (PageView, FunnelStage::Browse),
            (ProductView, FunnelStage::ProductView),
            (Search, FunnelStage::Browse),
            (AddToCart, FunnelStage::Cart),
            (RemoveFromCart, FunnelStage::Cart),
            (Wishlist, FunnelStage::Browse),
            (BeginCheckout, FunnelStage::Checkout),
            (PaymentAttempt, FunnelStage::Checkout),
            (Purchase, FunnelStage::Purchase),
            (Login, FunnelStage::Browse),
        ];
        assert_eq!(expected.len(), EventType::COUNT);
        for (t, stage) in expected {
            assert_eq!(funnel_stage(t), stage, "{t}");
        }
        assert!(FunnelStage::Browse < FunnelStage::Purchase);
    }

    #[test]
    fn repeats_are_compressed_and_the_tail_is_kept() {
        let mut p = Vec::new();
        for t in [
            PageView,
            PageView,
            ProductView,
            ProductView,
            PageView,
            AddToCart,
        ] {
            compress_path(&mut p, t, 3);
        }
        assert_eq!(p, vec![ProductView, PageView, AddToCart]);
        compress_path(&mut p, AddToCart, 3);
        assert_eq!(p, vec![ProductView, PageView, AddToCart]);
        compress_path(&mut p, Purchase, 3);
        assert_eq!(p, vec![PageView, AddToCart, Purchase]);

        let mut empty = Vec::new();
        compress_path(&mut empty, Search, 0);
        assert!(empty.is_empty());
    }
}
