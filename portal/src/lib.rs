//! The resident portal: the authenticated API and server-rendered pages.
