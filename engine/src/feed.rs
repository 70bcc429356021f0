//! Register change feeds (JSON Lines) and snapshot diffs: validated changes applied to a
//! population, producing the life events they imply. Format: docs/change-feed.md.
