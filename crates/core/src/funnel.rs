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
