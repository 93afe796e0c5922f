"""Card payments: sale, authorize, capture, void, refund."""
