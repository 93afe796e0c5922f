"""North (EPX's parent) reporting APIs: dispute search (epx-protocol.md §8)."""
