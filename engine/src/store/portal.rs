//! What the portal reads and changes: notices, drafts, recommendations, read marks and the
//! audit log.
