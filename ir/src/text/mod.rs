//! The `.hir` text form: printer and parser (in progress).
