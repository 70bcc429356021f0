//! Dry runs over a date range: what the catalogue would send, per rule and day, with no
//! writes anywhere.
